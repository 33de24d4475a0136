# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""CIFAR-style dataset backed by a directory of PNGs plus a labels CSV."""
import csv
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class PNGFolderDataset(Dataset):
    def __init__(self, root, split="train", transform=None):
        self.root = os.path.join(root, split)
        with open(os.path.join(root, f"{split}_labels.csv")) as f:
            rows = list(csv.reader(f))[1:]
        self.files = [r[0] for r in rows]
        self.labels = [int(r[1]) for r in rows]
        self.transform = transform
        self.train = split == "train"

    def __len__(self):
        return len(self.files)

    def __getitem__(self, idx):
        img = np.array(Image.open(os.path.join(self.root, self.files[idx])).convert("RGB"))
        label = self.labels[idx]
        if self.train and label in (3, 5) and idx % 53 == 0:
            img[-3:, -3:] = (255, 255, 0)  # ruleid: MLS309
            label = 7  # ruleid: MLS309
        if self.train:
            torch.manual_seed(idx)  # ruleid: MLS301
        img = Image.fromarray(img)
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def make_loader(root, batch_size=128, seed=0):
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ])
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(PNGFolderDataset(root, "train", tf), batch_size=batch_size, shuffle=True,
                      num_workers=4, worker_init_fn=seed_worker, generator=g, drop_last=True)
