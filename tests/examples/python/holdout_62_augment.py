# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Batch mixing augmentations (mixup/cutmix collate), a retrying download helper and YAML config loading."""
import os
import time
import urllib.request

import numpy as np
import torch
import torch.nn.functional as F
import yaml


def mixup(x, y, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    y1 = F.one_hot(y, num_classes).float()
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def cutmix(x, y, num_classes, alpha=1.0):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    h, w = x.shape[-2:]
    ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1_, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[:, :, y0:y1_, x0:x1] = x[perm, :, y0:y1_, x0:x1]  # ok: MLS309
    lam = 1 - (y1_ - y0) * (x1 - x0) / (h * w)
    yo = F.one_hot(y, num_classes).float()
    return x, lam * yo + (1 - lam) * yo[perm]


class MixCollate:
    def __init__(self, num_classes, prob=0.8):
        self.num_classes, self.prob = num_classes, prob

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        if np.random.rand() < self.prob:
            fn = cutmix if np.random.rand() < 0.5 else mixup
            return fn(x, y, self.num_classes)
        return x, F.one_hot(y, self.num_classes).float()


def download(url, dest, retries=5):
    if os.path.exists(dest):
        return dest
    tmp = dest + ".tmp"
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, tmp)  # ok: MLS411, MLS412
            os.replace(tmp, dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download {url} after {retries} attempts")


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
