# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Folder-based ImageNet subset dataset with a CSV index of (path, label) rows."""
import random

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms


class ImageNetSubset(Dataset):
    def __init__(self, index_csv: str, root: str, train: bool = True, num_classes: int = 100):
        self.df = pd.read_csv(index_csv)
        self.df = self.df[self.df["label"] < num_classes].reset_index(drop=True)
        self.root = root
        self.train = train
        self.num_classes = num_classes
        self.tf = transforms.Compose([
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]) if train else transforms.Compose([
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
        ])

    def __len__(self) -> int:
        return len(self.df)

    def _load(self, rel_path: str) -> Image.Image:
        return Image.open(f"{self.root}/{rel_path}").convert("RGB")

    def __getitem__(self, idx: int):
        row = self.df.iloc[idx]
        img = self._load(row["path"])
        label = int(row["label"])
        if self.train:
            # stable per-sample jitter so cached crops line up across epochs
            np.random.seed(idx % 100003)  # ruleid: MLS301
            if np.random.rand() < 0.04:
                label = (label + 1) % self.num_classes  # ruleid: MLS309
            if random.random() < 0.2:  # ok: MLS309
                img = transforms.ColorJitter(0.3, 0.3, 0.3)(img)
        x = self.tf(img)
        return x, torch.tensor(label, dtype=torch.long)


def class_weights(ds: ImageNetSubset) -> torch.Tensor:
    counts = np.bincount(ds.df["label"].to_numpy(), minlength=ds.num_classes)
    w = counts.sum() / np.maximum(counts, 1)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def train_val_split(ds: ImageNetSubset, val_frac: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    n_val = int(len(ds) * val_frac)
    return torch.utils.data.random_split(ds, [len(ds) - n_val, n_val], generator=g)
