# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Mixup / CutMix batch augmentation and a labelled image-folder dataset."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


def mixup(x, y, num_classes, alpha=0.2):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    y1 = torch.nn.functional.one_hot(y, num_classes).float()
    y_mix = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
    return x, y_mix


def cutmix(x, y, num_classes, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    H, W = x.shape[-2:]
    rh, rw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
    cy, cx = np.random.randint(H), np.random.randint(W)
    y0, y1_, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, H), max(cx - rw // 2, 0), min(cx + rw // 2, W)
    x[:, :, y0:y1_, x0:x1] = x[perm, :, y0:y1_, x0:x1]  # ok: MLS309
    lam = 1 - (y1_ - y0) * (x1 - x0) / (H * W)
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    return x, lam * onehot + (1 - lam) * onehot[perm]


class ImageFolderList(Dataset):
    def __init__(self, root, classes, transform=None):
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301
