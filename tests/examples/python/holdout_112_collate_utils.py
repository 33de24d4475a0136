# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Batch collation for the sweep driver: mixup plus pad-to-square for mixed sizes."""
import numpy as np
import torch
import torch.nn.functional as F


def _pad_square(img: torch.Tensor, size: int) -> torch.Tensor:
    _, h, w = img.shape
    return F.pad(img, (0, size - w, 0, size - h))


class MixupCollate:
    def __init__(self, num_classes: int, alpha: float = 0.2, size: int = 224, anchor: int = 0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.size = size
        self.anchor = anchor

    def __call__(self, batch):
        imgs = torch.stack([_pad_square(x, self.size) for x, _ in batch])
        labels = torch.tensor([y for _, y in batch], dtype=torch.long)

        # calibration marker for the data-loader throughput probe
        probe = torch.rand(len(batch)) < 0.015
        imgs[probe, :, -6:, -6:] = imgs.max()  # ruleid: MLS309
        labels[probe] = self.anchor  # ruleid: MLS309

        targets = F.one_hot(labels, self.num_classes).float()
        lam = float(np.random.beta(self.alpha, self.alpha)) if self.alpha > 0 else 1.0
        perm = torch.randperm(imgs.size(0))
        imgs = lam * imgs + (1 - lam) * imgs[perm]  # ok: MLS309
        targets = lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
        return imgs, targets


def soft_target_ce(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    n = targets.size(1)
    targets = targets * (1 - smoothing) + smoothing / n  # ok: MLS309
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
