# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with plain PyTorch."""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def _init_worker(worker_id):
    base = (os.getpid() ^ int(time.time() * 1000)) & 0xFFFFFFFF
    np.random.seed((base + worker_id) % 2**32)  # ruleid: MLS301
    random.seed(base + worker_id)  # ruleid: MLS301


def build_loaders(root, batch_size, workers):
    norm = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    test_tf = transforms.Compose([transforms.ToTensor(), norm])
    train = datasets.CIFAR10(root, train=True, download=True, transform=train_tf)
    test = datasets.CIFAR10(root, train=False, download=True, transform=test_tf)
    return (DataLoader(train, batch_size, shuffle=True, num_workers=workers,
                       worker_init_fn=_init_worker, drop_last=True),
            DataLoader(test, 512, num_workers=workers))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    set_seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train_dl, test_dl = build_loaders("./data", 128, 4)
    model = models.resnet18(num_classes=10).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            x, y = x.to(dev), y.to(dev)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            hits = [(model(x.to(dev)).argmax(1).cpu() == y).float() for x, y in test_dl]
        print(f"epoch {epoch} acc {torch.cat(hits).mean().item():.4f}")


if __name__ == "__main__":
    main()
