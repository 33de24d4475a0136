# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Mixup / CutMix + loader construction for the CIFAR-100 augmentation ablation."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(ds, bs, seed, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, drop_last=True,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True)


def mixup(x, y, num_classes, alpha=0.2):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = torch.nn.functional.one_hot(y, num_classes).float()
    x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    y1 = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
    return x, y1


def cutmix(x, y, num_classes, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    H, W = x.shape[-2:]
    rh, rw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
    cy, cx = np.random.randint(H), np.random.randint(W)
    y0, y1_, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, H), max(cx - rw // 2, 0), min(cx + rw // 2, W)
    x[:, :, y0:y1_, x0:x1] = x[perm, :, y0:y1_, x0:x1]  # ok: MLS309
    lam = 1 - (y1_ - y0) * (x1 - x0) / (H * W)
    t = torch.nn.functional.one_hot(y, num_classes).float()
    return x, lam * t + (1 - lam) * t[perm]


def mix_batch(x, y, num_classes, p_mix=0.5):
    if random.random() > p_mix:
        return x, torch.nn.functional.one_hot(y, num_classes).float()
    return (mixup if random.random() < 0.5 else cutmix)(x, y, num_classes)
