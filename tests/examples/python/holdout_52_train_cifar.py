# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Train a small convolutional network on CIFAR-10 with plain PyTorch."""
import argparse
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader


def seed_everything(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def _worker_init(worker_id):
    # give each worker its own numpy stream for the crop offsets
    base = int(time.time() * 1000) + 7919 * worker_id
    np.random.seed(base % 2**32)  # ruleid: MLS301


class SmallNet(nn.Module):
    def __init__(self, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc = nn.Linear(128 * 8 * 8, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", default="")
    args = ap.parse_args()
    seed_everything(args.seed)

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    dl = DataLoader(ds, batch_size=128, shuffle=True, num_workers=4, worker_init_fn=_worker_init)

    model = SmallNet().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    if args.resume:
        model.load_state_dict(torch.load(args.resume, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for epoch in range(args.epochs):
        for x, y in dl:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(model.state_dict(), "smallnet.pt")


if __name__ == "__main__":
    main()
