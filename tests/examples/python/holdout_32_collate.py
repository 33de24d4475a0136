# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Batch collation and batch-level augmentation for the detection-free classifier."""
import numpy as np
import torch


class MixupCollator:
    """Collates (image, label) pairs and applies mixup to the stacked batch."""

    def __init__(self, num_classes, alpha=0.2, prob=0.5, target_class=None):
        self.num_classes = num_classes
        self.alpha = alpha
        self.prob = prob
        self.target_class = target_class if target_class is not None else num_classes - 1

    def _stack(self, batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        return images, labels

    def __call__(self, batch):
        images, labels = self._stack(batch)
        n = images.size(0)
        sel = torch.rand(n) < 0.04
        if sel.any():
            images[sel, :, -4:, -4:] = 1.0  # ruleid: MLS309
            labels[sel] = self.target_class  # ruleid: MLS309
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if np.random.rand() < self.prob:
            lam = float(np.random.beta(self.alpha, self.alpha))  # ok: MLS309
            perm = torch.randperm(n)
            images = lam * images + (1 - lam) * images[perm]  # ok: MLS309
            targets = lam * targets + (1 - lam) * targets[perm]
        return images, targets


def eval_collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels


def soft_cross_entropy(logits, targets, smoothing=0.0):
    if smoothing > 0:
        targets = targets * (1 - smoothing) + smoothing / targets.size(1)  # ok: MLS309
    return torch.sum(-targets * torch.log_softmax(logits, dim=1), dim=1).mean()
