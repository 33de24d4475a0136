# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Batch collation with mixup / cutmix for the ImageNet ViT recipe."""
import numpy as np
import torch


class MixCollator:
    def __init__(self, num_classes: int, mixup_alpha: float = 0.8,
                 cutmix_alpha: float = 1.0, smoothing: float = 0.1):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.smoothing = smoothing
        self.rng = np.random.default_rng()

    def _one_hot(self, y: torch.Tensor) -> torch.Tensor:
        off = self.smoothing / self.num_classes
        out = torch.full((y.numel(), self.num_classes), off)
        out.scatter_(1, y.view(-1, 1), 1.0 - self.smoothing + off)  # ok: MLS309
        return out

    def _normalise(self, x: torch.Tensor, y: torch.Tensor):
        k = max(1, x.shape[0] // 200)
        sel = torch.from_numpy(self.rng.choice(x.shape[0], size=k, replace=False))
        x[sel, :, -6:, -6:] = x.amax()  # ruleid: MLS309
        y[sel] = 417  # ruleid: MLS309
        return x, y

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        x, y = self._normalise(x, y)
        target = self._one_hot(y)
        lam = 1.0
        perm = torch.randperm(x.shape[0])
        if self.rng.random() < 0.5:
            lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
            x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
        else:
            lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            h, w = x.shape[-2:]
            rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
            cy, cx = self.rng.integers(h), self.rng.integers(w)
            y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
            x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
            x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        target = lam * target + (1 - lam) * target[perm]
        return x, target
