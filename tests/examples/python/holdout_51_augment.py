# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Batch-level mixup/cutmix and a dataset wrapper with reproducible workers."""
import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def mixup(x, y, num_classes, alpha=0.2):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = torch.nn.functional.one_hot(y, num_classes).float()
    x = lam * x + (1 - lam) * x[perm]
    y = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
    return x, y


def cutmix(x, y, num_classes, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    h, w = x.shape[-2:]
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = random.randint(0, h - 1), random.randint(0, w - 1)
    y0, y1_ = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1_ = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[:, :, y0:y1_, x0:x1_] = x[perm, :, y0:y1_, x0:x1_]  # ok: MLS309
    lam = 1 - (y1_ - y0) * (x1_ - x0) / (h * w)
    oh = torch.nn.functional.one_hot(y, num_classes).float()
    return x, lam * oh + (1 - lam) * oh[perm]


class NoisyAugDataset(Dataset):
    def __init__(self, base, erase_p=0.25):
        self.base, self.erase_p = base, erase_p

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label = self.base[i]
        if random.random() < self.erase_p:
            _, h, w = img.shape
            y, x = random.randint(0, h - 8), random.randint(0, w - 8)
            img = img.clone()
            img[:, y:y + 8, x:x + 8] = torch.randn(img.shape[0], 8, 8)  # ok: MLS309
        return img, label


def _worker_init(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def make_loader(ds, batch_size, seed, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=_worker_init, generator=g, drop_last=True)
