# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Batch-level augmentation (mixup/cutmix) and reproducible DataLoader construction."""
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, random_split


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loaders(dataset, batch_size, seed, val_frac=0.1, workers=8):
    n_val = int(len(dataset) * val_frac)
    split_gen = torch.Generator().manual_seed(seed)  # ok: MLS301
    train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=split_gen)
    g = torch.Generator()
    g.manual_seed(seed)
    kw = dict(batch_size=batch_size, num_workers=workers, worker_init_fn=seed_worker, pin_memory=True)
    return (DataLoader(train, shuffle=True, generator=g, drop_last=True, **kw),
            DataLoader(val, shuffle=False, **kw))


def mixup_cutmix(x, y, num_classes, alpha=0.2, cutmix_alpha=1.0, p_cutmix=0.5, smoothing=0.1):
    y1 = F.one_hot(y, num_classes).float()
    y1 = y1 * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        h, w = x.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        t, b = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        l, r = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., t:b, l:r] = x[perm][..., t:b, l:r]  # ok: MLS309
        lam = 1 - (b - t) * (r - l) / (h * w)
    else:
        lam = float(np.random.beta(alpha, alpha))
        x = lam * x + (1 - lam) * x[perm]
    y_mix = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
    return x, y_mix


def soft_target_ce(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
