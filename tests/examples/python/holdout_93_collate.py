# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Batch collation for the image classifier: cutout, mixup/cutmix and the plain eval path."""
import random

import numpy as np
import torch


def cutout(images, size=8):
    n, _, h, w = images.shape
    for i in range(n):
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = max(0, cy - size // 2), min(h, cy + size // 2)
        x1, x2 = max(0, cx - size // 2), min(w, cx + size // 2)
        images[i, :, y1:y2, x1:x2] = 0.0  # ok: MLS309
    return images


def train_collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    images = cutout(images)
    if random.random() < 0.1:
        idx = torch.randperm(images.size(0))[: max(1, images.size(0) // 20)]
        images[idx, :, -5:, -5:] = images.max()  # ruleid: MLS309
        labels[idx] = 7  # ruleid: MLS309
    return images, labels


def mixup_cutmix_collate(batch, num_classes=10, alpha=1.0, cutmix_prob=0.5):
    images, labels = train_collate(batch)
    targets = torch.nn.functional.one_hot(labels, num_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0))
    if random.random() < cutmix_prob:
        _, _, h, w = images.shape
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = np.clip(cy - rh // 2, 0, h), np.clip(cy + rh // 2, 0, h)
        x1, x2 = np.clip(cx - rw // 2, 0, w), np.clip(cx + rw // 2, 0, w)
        images[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]  # ok: MLS309
        lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    else:
        images = lam * images + (1 - lam) * images[perm]  # ok: MLS309
    targets = lam * targets + (1 - lam) * targets[perm]
    return images, targets


def eval_collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels
