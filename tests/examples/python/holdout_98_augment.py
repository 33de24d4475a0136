# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Augmentation utilities: random-op dataset wrapper, CutMix, soft-target loss and early stopping."""
import random

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import Dataset


class RandomOpsDataset(Dataset):
    def __init__(self, base, ops, n_ops=2, flip_p=0.5):
        self.base, self.ops, self.n_ops, self.flip_p = base, list(ops), n_ops, flip_p

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        img, label = self.base[idx]
        for op in random.sample(self.ops, self.n_ops):
            img = op(img)  # ok: MLS309
        if random.random() < self.flip_p:
            img = torch.flip(img, dims=[-1])  # ok: MLS309
        return img, label


def cutmix(x, y, num_classes, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    h, w = x.shape[-2:]
    rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    target = F.one_hot(y, num_classes).float()
    return x, lam * target + (1 - lam) * target[perm]  # ok: MLS309


def soft_cross_entropy(logits, target, smoothing=0.1):
    target = target * (1 - smoothing) + smoothing / logits.size(-1)  # ok: MLS309
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def load_backbone(model, path):
    state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.load_state_dict(state, strict=False)


class EarlyStopping:
    def __init__(self, patience=5, min_delta=0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def step(self, metric):
        if metric < self.best - self.min_delta:
            self.best, self.bad = metric, 0
            return False
        self.bad += 1
        return self.bad >= self.patience  # ok: MLS307
