# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with crop/flip augmentation and gradient accumulation."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, models, transforms

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class AugmentedCIFAR(Dataset):
    def __init__(self, root, train=True, seed=0):
        self.base = datasets.CIFAR10(root, train=train, download=True)
        self.seed = seed
        ops = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
        self.tf = transforms.Compose(ops + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        img, label = self.base[idx]
        torch.manual_seed(self.seed + idx % 8)  # ruleid: MLS301
        return self.tf(img), label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    for name, default in (("--epochs", 30), ("--bs", 128), ("--accum", 2), ("--seed", 0)):
        p.add_argument(name, type=int, default=default)
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args()
    set_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    train = DataLoader(AugmentedCIFAR(args.data, True, args.seed), batch_size=args.bs, shuffle=True, num_workers=4)
    model = models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = args.epochs * len(train) // args.accum
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    crit = nn.CrossEntropyLoss()

    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for i, (x, y) in enumerate(train):
            loss = crit(model(x.to(device)), y.to(device)) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            running += loss.item()
            if (i + 1) % args.accum == 0:
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
        print(f"epoch {epoch} loss {running * args.accum / len(train):.4f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()
