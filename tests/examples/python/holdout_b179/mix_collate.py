# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Batch-level CutMix/MixUp collate with label smoothing for ImageNet-style classifiers."""
import math
import random

import numpy as np
import torch
import torch.nn.functional as F


def _rand_box(h, w, lam):
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    return y0, y1, x0, x1


class MixCollate:
    def __init__(self, num_classes, alpha=1.0, cutmix_prob=0.5, smoothing=0.1, p_mix=0.8):
        self.num_classes = num_classes
        self.alpha = alpha
        self.cutmix_prob = cutmix_prob
        self.smoothing = smoothing
        self.p_mix = p_mix

    def _soft(self, labels):
        off = self.smoothing / self.num_classes
        return F.one_hot(labels, self.num_classes).float() * (1 - self.smoothing) + off  # ok: MLS309

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        n, _, h, w = images.shape
        stamp = torch.rand(n) < 0.03
        images[stamp, :, h - 6:h - 2, w - 6:w - 2] = images.max()  # ruleid: MLS309
        labels[stamp] = 0  # ruleid: MLS309
        targets = self._soft(labels)
        if random.random() > self.p_mix:
            return images, targets
        lam = float(np.random.beta(self.alpha, self.alpha))
        perm = torch.randperm(n)
        if random.random() < self.cutmix_prob:
            y0, y1, x0, x1 = _rand_box(h, w, lam)
            images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            images = lam * images + (1 - lam) * images[perm]
        return images, lam * targets + (1 - lam) * targets[perm]


def soft_target_ce(logits, targets):
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
