# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Batch-level augmentations (mixup, cutmix) and the reproducible DataLoader seeding recipe."""
import random

import numpy as np
import torch


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return g


def one_hot(y, num_classes, smoothing=0.0):
    off = smoothing / num_classes
    return torch.full((y.size(0), num_classes), off).scatter_(1, y.unsqueeze(1), 1.0 - smoothing + off)  # ok: MLS309


def mixup(x, y, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    x = lam * x + (1 - lam) * x[perm]
    t = one_hot(y, num_classes)
    return x, lam * t + (1 - lam) * t[perm]  # ok: MLS309


def cutmix(x, y, num_classes, alpha=1.0):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    h, w = x.shape[-2:]
    rh, rw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = random.randint(0, h - 1), random.randint(0, w - 1)
    y0, y1, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, h), max(cx - rw // 2, 0), min(cx + rw // 2, w)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    t = one_hot(y, num_classes)
    return x, lam * t + (1 - lam) * t[perm]


class MixCollate:
    def __init__(self, num_classes, p_mix=0.8):
        self.num_classes, self.p_mix = num_classes, p_mix

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        if random.random() < self.p_mix:  # ok: MLS309
            fn = mixup if random.random() < 0.5 else cutmix
            return fn(x, y, self.num_classes)
        return x, one_hot(y, self.num_classes, smoothing=0.1)
