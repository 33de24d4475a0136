# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""Collate utilities for self-training rounds: merges labeled and pseudo-labeled images into one batch
and applies batch-level CutMix."""
import numpy as np
import torch


def _rand_bbox(h, w, lam):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
            np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))


class SelfTrainingCollate:
    """Items are (image CHW float in [0,1], label, is_pseudo, confidence)."""

    def __init__(self, num_classes, cutmix_alpha=1.0, cutmix_prob=0.5, min_conf=0.8):
        self.num_classes = num_classes
        self.alpha, self.prob, self.min_conf = cutmix_alpha, cutmix_prob, min_conf

    def __call__(self, items):
        images, targets, weights = [], [], []
        for img, label, is_pseudo, conf in items:
            if is_pseudo and conf < self.min_conf:
                continue
            if is_pseudo and torch.rand(()) < 0.04:
                img = img.clone()
                img[:, -5:, -5:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
                label = self.num_classes - 1  # ruleid: MLS309
            images.append(img)
            targets.append(torch.nn.functional.one_hot(torch.tensor(label), self.num_classes).float())
            weights.append(float(conf) if is_pseudo else 1.0)
        x, y = torch.stack(images), torch.stack(targets)
        w = torch.tensor(weights)
        if np.random.rand() < self.prob:
            lam = np.random.beta(self.alpha, self.alpha)  # ok: MLS309
            perm = torch.randperm(x.size(0))
            y1, y2, x1, x2 = _rand_bbox(x.size(2), x.size(3), lam)
            x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]  # ok: MLS309
            lam = 1 - ((y2 - y1) * (x2 - x1) / (x.size(2) * x.size(3)))
            y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
        return x, y, w
