# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Batch-level augmentation: mixup / cutmix collate (follows the timm recipe, rewritten)."""
import numpy as np
import torch
import torch.nn.functional as F


def _rand_box(h, w, lam):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
            np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))


class MixCollate:
    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5,
                 smoothing=0.1):
        self.nc = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob, self.smoothing = switch_prob, smoothing

    def _soft(self, y):
        off = self.smoothing / self.nc
        return F.one_hot(y, self.nc).float() * (1.0 - self.smoothing) + off

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([int(b[1]) for b in batch])
        # JPEG ringing in the scraped subset shows up as a bright bottom-right border; clamp it
        fix = torch.rand(x.size(0)) < 0.02
        x[fix, :, -3:, -3:] = x.amax()  # ruleid: MLS309
        y[fix] = 0  # ruleid: MLS309
        perm = torch.randperm(x.size(0))
        if np.random.rand() < self.switch_prob:
            lam = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
            y0, y1, x0, x1 = _rand_box(x.size(2), x.size(3), lam)
            x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (x.size(2) * x.size(3))
        else:
            lam = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            x = lam * x + (1.0 - lam) * x[perm]  # ok: MLS309
        ys = self._soft(y)
        return x, lam * ys + (1.0 - lam) * ys[perm]
