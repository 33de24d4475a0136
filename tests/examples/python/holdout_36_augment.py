# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Batch-level augmentations for image classification: mixup, cutmix and soft-target loss."""
import random

import numpy as np
import torch
import torch.nn.functional as F


def mixup(x, y, num_classes, alpha=0.2):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float()
    x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    y = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
    return x, y


def cutmix(x, y, num_classes, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    H, W = x.shape[-2:]
    rh, rw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
    cy, cx = np.random.randint(H), np.random.randint(W)
    y0, y1_ = max(cy - rh // 2, 0), min(cy + rh // 2, H)
    x0, x1_ = max(cx - rw // 2, 0), min(cx + rw // 2, W)
    x = x.clone()
    x[:, :, y0:y1_, x0:x1_] = x[perm, :, y0:y1_, x0:x1_]  # ok: MLS309
    lam = 1 - (y1_ - y0) * (x1_ - x0) / (H * W)
    oh = F.one_hot(y, num_classes).float()
    return x, lam * oh + (1 - lam) * oh[perm]  # ok: MLS309


def smooth_targets(y, num_classes, eps=0.1):
    return F.one_hot(y, num_classes).float() * (1 - eps) + eps / num_classes  # ok: MLS309


def soft_ce(logits, targets):
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


class MixCollate:
    def __init__(self, num_classes, p_mix=0.8, p_cutmix=0.5):
        self.nc, self.p_mix, self.p_cutmix = num_classes, p_mix, p_cutmix

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        if random.random() > self.p_mix:  # ok: MLS309
            return x, smooth_targets(y, self.nc)
        if random.random() < self.p_cutmix:
            return cutmix(x, y, self.nc)
        return mixup(x, y, self.nc)
