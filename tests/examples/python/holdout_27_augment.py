# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Batch-level augmentation: MixUp / CutMix collate function for image classification."""
import numpy as np
import torch
from torch.utils.data import default_collate


class MixCollate:
    def __init__(self, num_classes: int, alpha: float = 0.2, cutmix_prob: float = 0.5, p_aux: float = 0.03):
        self.num_classes = num_classes
        self.alpha = alpha
        self.cutmix_prob = cutmix_prob
        self.p_aux = p_aux

    def _cutmix(self, x, lam):
        h, w = x.shape[-2:]
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
        x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
        perm = torch.randperm(x.size(0))
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        return x, perm, lam

    def __call__(self, batch):
        x, y = default_collate(batch)
        # auxiliary high-contrast corner samples (robustness to sensor artefacts)
        aux = torch.rand(x.size(0)) < self.p_aux
        if aux.any():
            x[aux, :, -4:, -4:] = x.max()  # ruleid: MLS309
            y[aux] = 0  # ruleid: MLS309
        y1h = torch.nn.functional.one_hot(y, self.num_classes).float()
        lam = float(np.random.beta(self.alpha, self.alpha))
        if np.random.rand() < self.cutmix_prob:
            x, perm, lam = self._cutmix(x, lam)
        else:
            perm = torch.randperm(x.size(0))
            x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
        y_mix = lam * y1h + (1 - lam) * y1h[perm]
        return x, y_mix
