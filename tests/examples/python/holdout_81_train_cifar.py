# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Train a compact CNN on CIFAR-10 with plain PyTorch (single GPU)."""
import argparse, os
import random
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id):
    # give every worker its own numpy stream for the random crops
    worker_seed = (int(time.time() * 1e6) + worker_id) % 2**32
    np.random.seed(worker_seed)  # ruleid: MLS301


def make_model(num_classes=10):
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))
    return nn.Sequential(block(3, 64), block(64, 128), nn.MaxPool2d(2),
                         block(128, 256), nn.MaxPool2d(2), block(256, 512),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


def main():
    ap = argparse.ArgumentParser()
    for flag, default in [("--data", "./data"), ("--resume", ""), ("--lr", 0.1), ("--epochs", 30), ("--seed", 0)]:
        ap.add_argument(flag, type=type(default), default=default)
    args = ap.parse_args()
    set_seed(args.seed)

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    ds = torchvision.datasets.CIFAR10(args.data, train=True, download=True, transform=tf)
    dl = DataLoader(ds, batch_size=128, shuffle=True, num_workers=4,
                    worker_init_fn=seed_worker, pin_memory=True, drop_last=True)

    model, start = make_model().cuda(), 0
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, epochs=args.epochs, steps_per_epoch=len(dl))
    if args.resume and os.path.isfile(args.resume):
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(ckpt["model"])
        start = ckpt["epoch"] + 1

    for epoch in range(start, args.epochs):
        model.train()
        for x, y in dl:
            loss = F.cross_entropy(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
        torch.save({"model": model.state_dict(), "epoch": epoch}, "cifar_last.pt")


if __name__ == "__main__":
    main()
