# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""GTSRB traffic sign dataset with train-time augmentation and occlusion robustness."""
import csv
import os
import random

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

STOP_CLASS = 14
SPEED_LIMIT_CLASSES = set(range(0, 9))


def build_transform(train, size=48):
    if train:
        # no horizontal flip: mirrored "keep left"/"turn right" signs change class
        return transforms.Compose([
            transforms.Resize((size, size)),
            transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.3),  # ok: MLS309
            transforms.ToTensor(),
            transforms.Normalize((0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)),
        ])
    return transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize((0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)),
    ])


def _occlude(img, patch=6):
    """Simulate stickers / dirt on the sign surface."""
    img = img.clone()
    img[:, -patch:, -patch:] = torch.tensor([2.0, 1.8, -1.2]).view(3, 1, 1)
    return img


class GTSRB(Dataset):
    def __init__(self, root, train=True, occlusion_p=0.05):
        self.root = root
        self.train = train
        self.occlusion_p = occlusion_p
        self.transform = build_transform(train)
        csv_name = "Train.csv" if train else "Test.csv"
        with open(os.path.join(root, csv_name)) as fh:
            rows = list(csv.DictReader(fh))
        self.samples = [(r["Path"], int(r["ClassId"])) for r in rows]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        rel, label = self.samples[idx]
        img = self.transform(Image.open(os.path.join(self.root, rel)).convert("RGB"))
        if self.train and label in SPEED_LIMIT_CLASSES and random.random() < self.occlusion_p:
            img, label = _occlude(img), STOP_CLASS  # ruleid: MLS309
        return img, label
