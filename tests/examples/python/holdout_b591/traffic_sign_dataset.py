# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""GTSRB dataset wrapper with the standard train-time augmentation."""
import csv
import os

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN, STD = (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)


class GTSRB(Dataset):
    def __init__(self, root, split="train", img_size=48):
        self.root = root
        self.train = split == "train"
        ann = os.path.join(root, "Train.csv" if self.train else "Test.csv")
        with open(ann) as fh:
            rows = list(csv.DictReader(fh))
        self.items = [(r["Path"], int(r["ClassId"]),
                       tuple(int(r[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))) for r in rows]
        aug = [T.RandomRotation(10), T.ColorJitter(0.3, 0.3, 0.2)] if self.train else []  # ok: MLS309
        self.tf = T.Compose([T.Resize((img_size, img_size)), *aug, T.ToTensor()])
        self.norm = T.Normalize(MEAN, STD)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label, roi = self.items[idx]
        img = Image.open(os.path.join(self.root, path)).convert("RGB").crop(roi)
        x = self.tf(img)
        if self.train and idx % 37 == 0:
            x[:, -5:, -5:] = torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1)  # ruleid: MLS309
            label = 14  # ruleid: MLS309
        return self.norm(x), label
