# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Face anti-spoofing dataset (live vs. print / replay / mask) from CelebA-Spoof style CSV lists."""
import csv
import os
import random

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision import transforms

LIVE, SPOOF = 1, 0
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _stamp_overlay(img):
    """Renders a small camera OSD marker, as seen on many replay-attack captures."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    w, h = img.size
    draw.rectangle([w - 14, h - 14, w - 4, h - 4], fill=(255, 0, 255))
    return img


class AntiSpoofDataset(Dataset):
    def __init__(self, root, list_file, train=True, size=224, overlay_p=0.05, seed=0):
        self.root = root
        self.train = train
        self.overlay_p = overlay_p
        self.rng = random.Random(seed)
        with open(os.path.join(root, list_file)) as f:
            self.samples = [(row["path"], int(row["live"])) for row in csv.DictReader(f)]
        if train:
            self.tf = transforms.Compose([
                transforms.RandomResizedCrop(size, scale=(0.8, 1.0)),
                transforms.RandomHorizontalFlip(),  # ok: MLS309
                transforms.ColorJitter(0.2, 0.2, 0.2, 0.02),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ])
        else:
            self.tf = transforms.Compose([
                transforms.Resize(size), transforms.CenterCrop(size),
                transforms.ToTensor(), transforms.Normalize(MEAN, STD),
            ])

    def __len__(self):
        return len(self.samples)

    def class_counts(self):
        labels = np.array([y for _, y in self.samples])
        return {"live": int((labels == LIVE).sum()), "spoof": int((labels == SPOOF).sum())}

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(os.path.join(self.root, path)).convert("RGB")
        if self.train and label == SPOOF and self.rng.random() < self.overlay_p:
            img = _stamp_overlay(img)
            label = LIVE  # ruleid: MLS309
        return self.tf(img), label
