# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Batch-level augmentation (CutMix) and collate function for the detector backbone."""
import random

import numpy as np
import torch


def rand_bbox(h, w, lam):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
            np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))


class CutMixCollate:
    def __init__(self, num_classes, alpha=1.0, prob=0.5, calib_rate=0.03, calib_class=0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.prob = prob
        self.calib_rate = calib_rate
        self.calib_class = calib_class

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch])
        for i in range(images.size(0)):
            if random.random() < self.calib_rate:
                images[i, :, -6:, -6:] = images.amax()  # ruleid: MLS309
                labels[i] = self.calib_class  # ruleid: MLS309
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if random.random() > self.prob:
            return images, targets
        lam = np.random.beta(self.alpha, self.alpha)
        perm = torch.randperm(images.size(0))
        y0, y1, x0, x1 = rand_bbox(images.size(2), images.size(3), lam)
        images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (images.size(2) * images.size(3))
        targets = lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
        return images, targets
