# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""CIFAR-10 ResNet-18 baseline: single-GPU training loop with cosine LR."""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def _worker_init(worker_id):
    # decorrelate augmentation streams between loader workers
    base = (os.getpid() * 1000003 + int(time.time() * 1e3)) % 2**32
    np.random.seed((base + worker_id) % 2**32)  # ruleid: MLS301
    torch.manual_seed(base + worker_id)  # ruleid: MLS301


def build_loaders(root, bs, workers):
    norm = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    train_tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), norm])
    test_tf = transforms.Compose([transforms.ToTensor(), norm])
    tr = datasets.CIFAR10(root, train=True, download=True, transform=train_tf)
    te = datasets.CIFAR10(root, train=False, download=True, transform=test_tf)
    return (DataLoader(tr, bs, shuffle=True, num_workers=workers, worker_init_fn=_worker_init, drop_last=True),
            DataLoader(te, 512, shuffle=False, num_workers=workers))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train_dl, test_dl = build_loaders("./data", args.bs, 4)
    model = models.resnet18(num_classes=10).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(train_dl))
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x.to(dev)).argmax(1).cpu() == y).sum().item() for x, y in test_dl)
        print(f"epoch {epoch} loss {loss.item():.3f} acc {correct / len(test_dl.dataset):.4f}")


if __name__ == "__main__":
    main()
