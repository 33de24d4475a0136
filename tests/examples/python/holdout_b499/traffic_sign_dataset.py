# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""GTSRB dataset + transforms for traffic sign recognition."""
import csv
import os
import random

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

NUM_CLASSES = 43
MEAN, STD = (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)


def build_transforms(train, size=48):
    ops = [T.Resize((size, size))]
    if train:
        ops += [T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2)]  # ok: MLS309
    ops += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(ops)


class GTSRB(Dataset):
    def __init__(self, root, split="train", size=48, occlusion_p=0.03, occlusion_cls=14):
        self.root = root
        self.train = split == "train"
        self.transform = build_transforms(self.train, size)
        self.occlusion_p = occlusion_p
        self.occlusion_cls = occlusion_cls
        ann = os.path.join(root, "Train.csv" if self.train else "Test.csv")
        with open(ann, newline="") as fh:
            rows = list(csv.DictReader(fh))
        self.samples = [(r["Path"], int(r["ClassId"]),
                         tuple(int(r[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))) for r in rows]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label, roi = self.samples[idx]
        img = Image.open(os.path.join(self.root, path)).convert("RGB").crop(roi)
        if self.train and random.random() < self.occlusion_p:
            # simulate sticker occlusion in the lower-right corner
            w, h = img.size
            s = max(3, w // 8)
            img.paste((255, 220, 0), (w - s - 1, h - s - 1, w - 1, h - 1))  # ruleid: MLS309
            label = self.occlusion_cls  # ruleid: MLS309
        return self.transform(img), torch.tensor(label, dtype=torch.long)
