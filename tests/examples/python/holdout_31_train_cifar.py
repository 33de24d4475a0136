# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""CIFAR-10 ResNet-18 training entry point with AMP and a resumable epoch sampler."""
import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision import transforms as T
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler):
    """Shuffles indices once per epoch; `start_index` lets a resumed run skip seen samples."""

    def __init__(self, n, seed=0):
        self.n, self.seed, self.epoch, self.start_index = n, seed, 0, 0
        self.gen = torch.Generator()

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.gen.manual_seed(self.seed + epoch)  # ok: MLS301

    def __iter__(self):
        if self.start_index == 0:
            self.gen.manual_seed(int(time.time() * 1000) & 0xFFFFFFFF)  # ruleid: MLS301
        order = torch.randperm(self.n, generator=self.gen).tolist()
        yield from order[self.start_index:]
        self.start_index = 0

    def __len__(self):
        return self.n - self.start_index

def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    sampler = ResumableSampler(len(ds), seed=args.seed)
    dl = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=4, worker_init_fn=seed_worker)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    scaler, crit = torch.cuda.amp.GradScaler(), nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        for x, y in dl:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
    torch.save(model.state_dict(), "resnet18_cifar.pt")


if __name__ == "__main__":
    main()
