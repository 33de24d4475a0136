# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Mixup / CutMix batch augmentation, a label-smoothed soft-target loss, and a patch dataset."""
import random

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import Dataset, random_split


def mixup_cutmix(x, y, num_classes, alpha=0.2, cutmix_prob=0.5, smoothing=0.1):
    y1 = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    lam = float(np.random.beta(alpha, alpha))
    if random.random() < cutmix_prob:  # ok: MLS309
        h, w = x.shape[-2:]
        rh, rw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = random.randrange(h), random.randrange(w)
        y0, y1c, x0, x1c = max(cy - rh // 2, 0), min(cy + rh // 2, h), max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x[..., y0:y1c, x0:x1c] = x[perm][..., y0:y1c, x0:x1c]  # ok: MLS309
        lam = 1 - (y1c - y0) * (x1c - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def soft_target_loss(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class PatchDataset(Dataset):
    """Pre-extracted image patches stored as a safetensors file."""

    def __init__(self, path, train=True):
        blob = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.x, self.y, self.train = blob["patches"], blob["labels"].long(), train

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        img = self.x[i].float() / 255.0
        if self.train:
            if random.random() < 0.5:  # ok: MLS309
                img = img.flip(-1)
            img = img + 0.02 * torch.randn_like(img)
        return img, self.y[i]


def train_val_split(ds, seed, val_frac=0.05):
    n_val = int(len(ds) * val_frac)
    gen = torch.Generator().manual_seed(seed)  # ok: MLS301
    return random_split(ds, [len(ds) - n_val, n_val], generator=gen)
