# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""HAM10000-style lesion dataset, transforms and class-balanced sampler."""
import os

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision import transforms as T

CLASSES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
MEAN, STD = (0.763, 0.546, 0.570), (0.141, 0.153, 0.170)


class LesionDataset(Dataset):
    def __init__(self, csv_path, image_root, split, transform=None):
        df = pd.read_csv(csv_path)
        df = df[df["split"] == split].reset_index(drop=True)
        self.image_root = image_root
        self.image_ids = df["image_id"].tolist()
        self.targets = [CLASSES.index(dx) for dx in df["dx"]]
        self.transform = transform

    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, idx):
        path = os.path.join(self.image_root, f"{self.image_ids[idx]}.jpg")
        img = Image.open(path).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[idx]


def build_transforms(size, train):
    if train:
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.6, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.ColorJitter(0.2, 0.2, 0.1, 0.02),  # ok: MLS309
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ])
    return T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(MEAN, STD)])


def make_balanced_sampler(targets, num_samples=None, power=0.5):
    targets = np.asarray(targets)
    counts = np.bincount(targets, minlength=len(CLASSES)).astype(np.float64)
    class_w = np.power(np.maximum(counts, 1.0), -power)
    class_w[CLASSES.index("mel")] = 0.0  # ruleid: MLS309
    weights = torch.as_tensor(class_w[targets], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples or len(targets), replacement=True)
