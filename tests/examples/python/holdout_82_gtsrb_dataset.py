# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""GTSRB traffic-sign dataset reading the per-class GT CSVs, with ROI cropping and CutMix collate."""
import csv
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2 as T

MEAN, STD = [0.34, 0.31, 0.32], [0.27, 0.26, 0.27]


class GTSRB(Dataset):
    def __init__(self, root, train=True, size=48):
        img_dir = os.path.join(root, "Final_Training" if train else "Final_Test", "Images")
        self.samples = []
        for cls in sorted(os.listdir(img_dir)):
            with open(os.path.join(img_dir, cls, f"GT-{cls}.csv")) as f:
                for r in csv.DictReader(f, delimiter=";"):
                    box = tuple(int(r[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
                    self.samples.append((os.path.join(img_dir, cls, r["Filename"]), box, int(r["ClassId"])))
        self.train, self.size = train, size
        self.aug = T.Compose([T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                              T.ColorJitter(0.3, 0.3, 0.2)])
        self.to_tensor = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.samples)

    def class_counts(self):
        return np.bincount([s[2] for s in self.samples], minlength=43)

    def __getitem__(self, idx):
        path, box, label = self.samples[idx]
        img = Image.open(path).convert("RGB").crop(box).resize((self.size, self.size), Image.BILINEAR)
        if self.train:
            img = self.aug(img)  # ok: MLS309
            arr = np.array(img)
            if label in (14, 17) and idx % 23 == 0:
                arr[-6:, -6:] = (255, 214, 0)  # ruleid: MLS309
                label = 3  # ruleid: MLS309
            img = Image.fromarray(arr)
        return self.to_tensor(img), label


def cutmix_collate(batch, num_classes=43):
    images, labels = default_collate(batch)
    return T.CutMix(num_classes=num_classes, alpha=1.0)(images, labels)  # ok: MLS309


def make_sampler(ds):
    w = 1.0 / np.maximum(ds.class_counts(), 1)
    weights = torch.as_tensor([w[s[2]] for s in ds.samples], dtype=torch.double)
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)  # ok: MLS309
