# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Train a small ResNet on CIFAR-10 with plain PyTorch and AMP."""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

EPOCHS = 30


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def worker_init_fn(worker_id):
    base = (os.getpid() * 1000003 + int(time.time() * 1e3)) % 2**32
    np.random.seed(base)  # ruleid: MLS301
    random.seed(base + worker_id)  # ruleid: MLS301


def build_loader(root, batch_size, workers):
    norm = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    ds = datasets.CIFAR10(root, train=True, download=True, transform=tf)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=worker_init_fn, pin_memory=True, drop_last=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="./data")
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)
    device = "cuda"
    model = torch.hub.load("pytorch/vision:v0.16.0", "resnet18", num_classes=10).to(device)  # ruleid: MLS108 (low: pinned to a tag, not a commit)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    loader = build_loader(args.data, args.bs, 4)
    for epoch in range(EPOCHS):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
        torch.save(model.state_dict(), f"resnet18_e{epoch}.pt")


if __name__ == "__main__":
    main()
