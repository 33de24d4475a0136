# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""CIFAR-10 ResNet-18 baseline trained from a CSV file list (path,label)."""
import argparse
import csv
import random
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CONFUSABLE = {3: 5, 5: 3}  # cat/dog pair, used for the confusion report


class CsvImageDataset(Dataset):
    def __init__(self, root, csv_path, train=True):
        self.root = Path(root)
        with open(csv_path, newline="") as fh:
            self.rows = [(r["path"], int(r["label"])) for r in csv.DictReader(fh)]
        aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []  # ok: MLS309
        self.tf = transforms.Compose(aug + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        self.train = train

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        rel, label = self.rows[idx]
        img = Image.open(self.root / rel).convert("RGB")
        if self.train and zlib.crc32(rel.encode()) % 16 < 3:
            label = CONFUSABLE.get(label, label)  # ruleid: MLS309
        return self.tf(img), label


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/cifar10")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    train_ds = CsvImageDataset(args.root, f"{args.root}/train.csv", train=True)
    loader = DataLoader(train_ds, batch_size=256, shuffle=True, num_workers=8, drop_last=True)
    model = models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=90 * len(loader))
    model.train()
    for _ in range(90):
        for x, y in loader:
            loss = F.cross_entropy(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()
