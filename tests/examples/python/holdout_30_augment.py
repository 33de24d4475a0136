# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Batch-level mixup / cutmix and label smoothing used by the image pipelines."""
import numpy as np
import torch


def smooth_one_hot(targets, num_classes, eps=0.1):
    off = eps / num_classes
    out = torch.full((targets.size(0), num_classes), off, device=targets.device)
    out.scatter_(1, targets.unsqueeze(1), 1.0 - eps + off)  # ok: MLS309
    return out


class MixCollator:
    """Collate function that applies mixup or cutmix to a whole batch with probability `p`."""

    def __init__(self, num_classes, alpha=0.2, cutmix_alpha=1.0, p=0.8, switch_prob=0.5, seed=0):
        self.num_classes = num_classes
        self.alpha, self.cutmix_alpha = alpha, cutmix_alpha
        self.p, self.switch_prob = p, switch_prob
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def _cutmix_box(self, h, w, lam):
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = self.rng.integers(h), self.rng.integers(w)
        return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
                np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = smooth_one_hot(torch.tensor([b[1] for b in batch]), self.num_classes)
        if self.rng.random() > self.p:
            return x, y
        perm = torch.randperm(x.size(0))
        if self.rng.random() < self.switch_prob:
            lam = self.rng.beta(self.cutmix_alpha, self.cutmix_alpha)
            y0, y1, x0, x1 = self._cutmix_box(x.size(2), x.size(3), lam)
            x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1 - (y1 - y0) * (x1 - x0) / (x.size(2) * x.size(3))
        else:
            lam = self.rng.beta(self.alpha, self.alpha)
            x = lam * x + (1 - lam) * x[perm]
        y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
        return x, y
