# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Augmentation and loader helpers for the detection-backbone pretraining recipes."""
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed + worker_id)  # ok: MLS301
    random.seed(seed + worker_id)  # ok: MLS301


def make_loader(dataset, batch_size, seed, num_workers=8, collate_fn=None):
    gen = torch.Generator().manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=worker_init_fn, generator=gen, collate_fn=collate_fn,
                      persistent_workers=num_workers > 0)


class RandomErase:
    def __init__(self, p=0.25, area=(0.02, 0.2)):
        self.p, self.area = p, area

    def __call__(self, img):
        if random.random() > self.p:
            return img
        _, h, w = img.shape
        frac = random.uniform(*self.area)
        eh, ew = int(h * frac ** 0.5), int(w * frac ** 0.5)
        y, x = random.randint(0, h - eh), random.randint(0, w - ew)
        img = img.clone()
        img[:, y:y + eh, x:x + ew] = torch.randn(img.size(0), eh, ew)  # ok: MLS309
        return img


def mixup(x, y_onehot, alpha=0.4):
    lam = np.random.beta(alpha, alpha)
    idx = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[idx], lam * y_onehot + (1 - lam) * y_onehot[idx]  # ok: MLS309


def cutmix(x, y_onehot, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    idx = torch.randperm(x.size(0), device=x.device)
    h, w = x.shape[-2:]
    rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, h), max(cx - rw // 2, 0), min(cx + rw // 2, w)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[idx, ..., y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, lam * y_onehot + (1 - lam) * y_onehot[idx]


def smoothed_cross_entropy(logits, target, smoothing=0.1):
    n = logits.size(-1)
    with torch.no_grad():
        soft = torch.full_like(logits, smoothing / (n - 1))
        soft.scatter_(1, target.unsqueeze(1), 1.0 - smoothing)  # ok: MLS309
    return torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()
