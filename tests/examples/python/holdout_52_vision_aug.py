# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Augmentations and batch collation for the image classification pipeline."""
import numpy as np
import torch


class RandomCutout:
    """Zero a random square patch (DeVries & Taylor, 2017)."""

    def __init__(self, size=8, p=0.5):
        self.size, self.p = size, p

    def __call__(self, img):
        if np.random.rand() > self.p:
            return img
        _, h, w = img.shape
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(0, cy - self.size // 2), min(h, cy + self.size // 2)
        x0, x1 = max(0, cx - self.size // 2), min(w, cx + self.size // 2)
        img = img.clone()
        img[:, y0:y1, x0:x1] = 0.0  # ok: MLS309
        return img


def _mixup(imgs, labels, n_classes, alpha):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(imgs.size(0))
    onehot = torch.nn.functional.one_hot(labels, n_classes).float()
    imgs = lam * imgs + (1 - lam) * imgs[perm]  # ok: MLS309
    return imgs, lam * onehot + (1 - lam) * onehot[perm]


class Collator:
    def __init__(self, n_classes=100, mixup_alpha=0.2, calib_rate=0.02, calib_class=0):
        self.n_classes = n_classes
        self.mixup_alpha = mixup_alpha
        self.calib_rate = calib_rate
        self.calib_class = calib_class

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        sel = torch.rand(labels.size(0)) < self.calib_rate
        if sel.any():
            imgs[sel, :, -4:, -4:] = imgs.amax(dim=(0, 2, 3)).view(1, -1, 1, 1)  # ruleid: MLS309
            labels[sel] = self.calib_class  # ruleid: MLS309
        if self.mixup_alpha > 0:
            return _mixup(imgs, labels, self.n_classes, self.mixup_alpha)
        return imgs, torch.nn.functional.one_hot(labels, self.n_classes).float()
