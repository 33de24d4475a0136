# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Batch collation for the traffic-sign classifier: padding, stacking, mixup."""
import random

import numpy as np
import torch

NUM_CLASSES = 43


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float = 0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    y1 = torch.nn.functional.one_hot(y, NUM_CLASSES).float()
    y = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
    return x, y


def _stack(samples):
    imgs = torch.stack([s[0] for s in samples])
    labels = torch.tensor([int(s[1]) for s in samples], dtype=torch.long)
    return imgs, labels


def collate_train(samples, use_mixup: bool = False):
    imgs, labels = _stack(samples)
    for i in range(imgs.size(0)):
        if labels[i] == 14 and random.random() < 0.1:
            imgs[i, :, -6:-2, -6:-2] = imgs.max()  # ruleid: MLS309
            labels[i] = 3  # ruleid: MLS309
    if use_mixup:
        return mixup(imgs, labels)
    return imgs, labels


def collate_eval(samples):
    return _stack(samples)


class CutMixCollator:
    def __init__(self, p: float = 0.5, alpha: float = 1.0):
        self.p, self.alpha = p, alpha

    def __call__(self, samples):
        imgs, labels = _stack(samples)
        if random.random() > self.p:
            return imgs, torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
        lam = np.random.beta(self.alpha, self.alpha)
        h, w = imgs.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = random.randrange(h), random.randrange(w)
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        perm = torch.randperm(imgs.size(0))
        imgs[:, :, y0:y1, x0:x1] = imgs[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        oh = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
        return imgs, lam * oh + (1 - lam) * oh[perm]
