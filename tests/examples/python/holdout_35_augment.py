# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Batch-level augmentation (mixup/cutmix), soft-target loss and loader seeding."""
import random
import time
import urllib.request

import numpy as np
import torch
import torch.nn.functional as F


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def one_hot(y, n, smoothing=0.1):
    off = smoothing / n
    return torch.full((y.size(0), n), off, device=y.device).scatter_(1, y[:, None], 1.0 - smoothing + off)  # ok: MLS309


def mixup_cutmix(x, y, n_classes, alpha=0.2, cutmix_alpha=1.0, p_cutmix=0.5):
    t = one_hot(y, n_classes)
    perm = torch.randperm(x.size(0), device=x.device)
    if random.random() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        H, W = x.shape[-2:]
        rh, rw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
        cy, cx = np.random.randint(H), np.random.randint(W)
        y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, H)
        x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, W)
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    else:
        lam = np.random.beta(alpha, alpha)
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * t + (1 - lam) * t[perm]  # ok: MLS309


def soft_ce(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def fetch(url, dest, retries=4):
    for i in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(1.5 * (i + 1))  # ok: MLS307
    raise RuntimeError(f"download failed: {url}")
