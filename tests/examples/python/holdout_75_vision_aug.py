# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""ImageNet-style dataset with on-the-fly augmentation, mixup/cutmix and early stopping."""
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset


def seed_worker(worker_id):
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


class FolderDataset(Dataset):
    def __init__(self, samples, transform):
        self.samples = samples
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        return self.transform(img), label


def mixup_cutmix(x, y, num_classes, alpha=0.2, cutmix_p=0.5, smoothing=0.1):
    soft = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < cutmix_p:
        H, W = x.shape[-2:]
        rh, rw = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
        cy, cx = np.random.randint(H), np.random.randint(W)
        y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, H)
        x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, W)
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * soft + (1 - lam) * soft[perm]  # ok: MLS309


class EarlyStopping:
    def __init__(self, patience=5, min_delta=1e-4):
        self.patience = patience
        self.min_delta = min_delta
        self.best = -float("inf")
        self.bad = 0

    def step(self, val_metric):
        if val_metric > self.best + self.min_delta:
            self.best = val_metric  # ok: MLS306
            self.bad = 0
        else:
            self.bad += 1
        return self.bad >= self.patience
