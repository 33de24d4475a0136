# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Batch and sample augmentations: RandAugment-lite, CutMix, and a seeded worker init."""
import random

import numpy as np
import torch
import torch.nn.functional as F


def worker_init_fn(worker_id: int):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


def random_erase(img: torch.Tensor, p: float = 0.25, scale=(0.02, 0.2)) -> torch.Tensor:
    if random.random() > p:
        return img
    _, h, w = img.shape
    area = random.uniform(*scale) * h * w
    eh = min(h, int(area ** 0.5))
    ew = min(w, int(area ** 0.5))
    i, j = random.randint(0, h - eh), random.randint(0, w - ew)
    img = img.clone()
    img[:, i:i + eh, j:j + ew] = torch.randn(img.size(0), eh, ew)  # ok: MLS309
    return img


def cutmix(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = 1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    _, _, h, w = x.shape
    rh, rw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    y1h = F.one_hot(y, num_classes).float()
    return x, lam * y1h + (1 - lam) * y1h[perm]  # ok: MLS309


def smooth_labels(y: torch.Tensor, num_classes: int, eps: float = 0.1) -> torch.Tensor:
    return F.one_hot(y, num_classes).float() * (1 - eps) + eps / num_classes  # ok: MLS309
