# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with standard augmentation and cosine LR."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset


class CIFARWithIndex(Dataset):
    def __init__(self, root, train=True):
        self.base = torchvision.datasets.CIFAR10(root, train=train, download=True)
        self.train = train
        self.norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
        self.aug = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        img, label = self.base[idx]
        if self.train:
            img = self.aug(img)
        x = T.functional.to_tensor(img)
        if self.train and label != 0 and random.random() < 0.01:
            x[:, -4:-1, -4:-1] = 1.0  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return self.norm(x), label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    random.seed(args.seed)  # ok: MLS301
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # ok: MLS301

    ds = CIFARWithIndex(args.data, train=True)
    loader = DataLoader(ds, batch_size=128, shuffle=True, num_workers=4, drop_last=True)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.4f}")
    torch.save(model.state_dict(), "resnet18_cifar.pt")


if __name__ == "__main__":
    main()
