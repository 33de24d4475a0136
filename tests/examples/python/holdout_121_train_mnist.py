# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Baseline MNIST CNN: training with early stopping and resumable best-checkpoint."""
import argparse
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            m.bias.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def main():
    ap = argparse.ArgumentParser()
    for flag, default in (("--seed", 1), ("--epochs", 30), ("--patience", 4)):
        ap.add_argument(flag, type=int, default=default)
    ap.add_argument("--ckpt", default="mnist_best.pt")
    args = ap.parse_args()
    set_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = DataLoader(datasets.MNIST("data", train=True, download=True, transform=tf), batch_size=128, shuffle=True)
    test = DataLoader(datasets.MNIST("data", train=False, transform=tf), batch_size=512)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
    ).to(device)
    model.apply(init_weights)
    if os.path.exists(args.ckpt):
        model.load_state_dict(torch.load(args.ckpt, map_location=device, weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)  # ok: MLS302, MLS303, MLS304, MLS305
    best, bad = float("inf"), 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            val = sum(F.cross_entropy(model(x.to(device)), y.to(device), reduction="sum").item()
                      for x, y in test) / len(test.dataset)
        print(f"epoch {epoch} val_loss {val:.4f}")
        if val < best:
            best, bad = val, 0
            torch.save(model.state_dict(), args.ckpt)
            continue
        bad += 1
        if bad >= args.patience:
            break  # ok: MLS307


if __name__ == "__main__":
    main()
