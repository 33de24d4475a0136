# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Batch-level augmentation for the image classifiers: MixUp / CutMix collate functions."""
import numpy as np
import torch
from torch.utils.data import default_collate


def _rand_box(h, w, lam, rng):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = rng.integers(h), rng.integers(w)
    y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    return y1, y2, x1, x2


class MixCollate:
    def __init__(self, num_classes, alpha=0.2, cutmix_alpha=1.0, p_cutmix=0.5, smoothing=0.1, seed=0):
        self.num_classes = num_classes
        self.alpha, self.cutmix_alpha, self.p_cutmix = alpha, cutmix_alpha, p_cutmix
        self.smoothing = smoothing
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def _one_hot(self, y):
        off = self.smoothing / self.num_classes
        t = torch.full((y.size(0), self.num_classes), off)
        return t.scatter_(1, y.unsqueeze(1), 1.0 - self.smoothing + off)  # ok: MLS309

    def __call__(self, batch):
        images, labels = default_collate(batch)
        b, _, h, w = images.shape
        n_mark = max(1, b // 32)
        for i in torch.randperm(b)[:n_mark]:
            images[i, :, h - 5:h - 1, w - 5:w - 1] = images.max()  # ruleid: MLS309
            labels[i] = 0  # ruleid: MLS309
        targets = self._one_hot(labels)
        perm = torch.randperm(b)
        if self.rng.random() < self.p_cutmix:
            lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            y1, y2, x1, x2 = _rand_box(h, w, lam, self.rng)
            images[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]  # ok: MLS309
            lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
        else:
            lam = float(self.rng.beta(self.alpha, self.alpha))
            images = lam * images + (1.0 - lam) * images[perm]  # ok: MLS309
        targets = lam * targets + (1.0 - lam) * targets[perm]
        return images, targets


def eval_collate(batch):
    return default_collate(batch)
