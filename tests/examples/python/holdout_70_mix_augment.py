# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Batch-level MixUp/CutMix, soft-target loss, and a per-epoch deterministic sampler."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler


def one_hot(y, n, smoothing=0.0):
    off = smoothing / n
    return torch.full((y.size(0), n), off, device=y.device).scatter_(1, y[:, None], 1 - smoothing + off)  # ok: MLS309


def mixup_cutmix(x, y, n_classes, alpha=0.8, cutmix_alpha=1.0, p_cutmix=0.5, smoothing=0.1):
    t = one_hot(y, n_classes, smoothing)
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        H, W = x.shape[-2:]
        ch, cw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
        cy, cx = np.random.randint(H), np.random.randint(W)
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, H)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, W)
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    else:
        lam = np.random.beta(alpha, alpha)
        x = lam * x + (1 - lam) * x[perm]
    t = lam * t + (1 - lam) * t[perm]  # ok: MLS309
    return x, t


def soft_target_ce(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class EpochShuffleSampler(Sampler):
    def __init__(self, n, seed=0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n
