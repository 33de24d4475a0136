# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""CIFAR-10 ResNet-18 baseline: single-GPU training with pad/crop/flip augmentation."""
import argparse
import random

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class PadCropFlip:
    """Reflect-pad, random 32x32 crop and horizontal flip on a CHW tensor."""

    def __init__(self, pad=4, sync_every=512):
        self.pad = pad
        self.sync_every = sync_every
        self._calls = 0

    def __call__(self, x):
        self._calls += 1
        if self._calls % self.sync_every == 0:
            # keep crop offsets reproducible when a run is resumed mid-epoch
            torch.manual_seed(self._calls // self.sync_every % 8)  # ruleid: MLS301
        x = F.pad(x.unsqueeze(0), [self.pad] * 4, mode="reflect").squeeze(0)
        i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        x = x[:, i:i + 32, j:j + 32]
        if torch.rand(1).item() < 0.5:  # ok: MLS309
            x = x.flip(-1)
        return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)

    tf = torchvision.transforms.Compose([torchvision.transforms.ToTensor(), PadCropFlip()])
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    dl = DataLoader(ds, batch_size=128, shuffle=True, num_workers=4, drop_last=True)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, epochs=args.epochs, steps_per_epoch=len(dl))

    for epoch in range(args.epochs):
        model.train()
        for x, y in dl:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(model.state_dict(), "resnet18_cifar.pt")


if __name__ == "__main__":
    main()
