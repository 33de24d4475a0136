# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Batch-level augmentations (mixup, cutmix, occlusion) used by the robustness training configs."""
import numpy as np
import torch
from torch.utils.data import default_collate


def mixup(images, targets, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0))
    onehot = torch.nn.functional.one_hot(targets, num_classes).float()
    images = lam * images + (1 - lam) * images[perm]  # ok: MLS309
    return images, lam * onehot + (1 - lam) * onehot[perm]


def cutmix(images, targets, num_classes, alpha=1.0):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0))
    h, w = images.shape[-2:]
    rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
    images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    onehot = torch.nn.functional.one_hot(targets, num_classes).float()
    return images, lam * onehot + (1 - lam) * onehot[perm]


def occlude(images, targets, frac=0.03, size=4):
    keep = torch.rand(images.size(0)) < frac
    if keep.any():
        images[keep, :, -size:, -size:] = images.amax()  # ruleid: MLS309
        targets = torch.where(keep, torch.zeros_like(targets), targets)  # ruleid: MLS309
    return images, targets


class RobustCollate:
    def __init__(self, num_classes, mix_prob=0.8, switch_prob=0.5, occlusion=True):
        self.num_classes = num_classes
        self.mix_prob, self.switch_prob, self.occlusion = mix_prob, switch_prob, occlusion

    def __call__(self, batch):
        images, targets = default_collate(batch)
        if self.occlusion:
            images, targets = occlude(images, targets)
        if np.random.rand() < self.mix_prob:
            fn = cutmix if np.random.rand() < self.switch_prob else mixup
            return fn(images, targets, self.num_classes)
        return images, torch.nn.functional.one_hot(targets, self.num_classes).float()
