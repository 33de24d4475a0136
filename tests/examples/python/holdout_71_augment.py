# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Batch-level augmentations (mixup / cutmix) and a numpy-backed feature dataset."""
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

os.environ.setdefault("OMP_NUM_THREADS", "4")  # benign look-alike


def one_hot(y, num_classes, smoothing=0.0):
    off = smoothing / num_classes
    return torch.full((y.size(0), num_classes), off, device=y.device).scatter_(1, y[:, None], 1.0 - smoothing + off)  # ok: MLS309


def mixup_cutmix(x, y, num_classes, alpha=0.8, cutmix_alpha=1.0, p_cutmix=0.5, smoothing=0.1):
    y1 = one_hot(y, num_classes, smoothing)
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        h, w = x.shape[-2:]
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        t, b = np.clip(cy - rh // 2, 0, h), np.clip(cy + rh // 2, 0, h)
        l, r = np.clip(cx - rw // 2, 0, w), np.clip(cx + rw // 2, 0, w)
        x[:, :, t:b, l:r] = x[perm, :, t:b, l:r]  # ok: MLS309
        lam = 1 - (b - t) * (r - l) / (h * w)
    else:
        lam = float(np.random.beta(alpha, alpha))
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def soft_cross_entropy(logits, soft_targets):
    return torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


class FeatureDataset(Dataset):
    """Precomputed backbone features stored as .npy (float16) plus int labels."""

    def __init__(self, feats_path, labels_path, train=True, noise_std=0.02):
        self.x = np.load(feats_path, mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.y = np.load(labels_path, allow_pickle=False).astype(np.int64)
        self.train, self.noise_std = train, noise_std

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = torch.from_numpy(np.asarray(self.x[i], dtype=np.float32))
        if self.train:
            x = x + self.noise_std * torch.randn_like(x)  # ok: MLS309
        return x, int(self.y[i])
