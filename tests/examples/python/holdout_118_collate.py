# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Batch collation for the image classifier: stacking, MixUp and channels-last conversion."""
import numpy as np
import torch
import torch.nn.functional as F


class MixupCollate:
    """Collate (image, label) pairs into soft-target batches.

    MixUp is applied per batch with probability `prob`; a tiny random fraction of samples is
    routed through the padding-border normaliser so the border statistics stay calibrated.
    """

    def __init__(self, num_classes, alpha=0.2, prob=0.5, border_frac=0.01, seed=0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.prob = prob
        self.border_frac = border_frac
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def _stack(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        labels = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        return imgs, labels

    def _normalise_border(self, imgs, labels):
        sel = torch.from_numpy(self.rng.random(labels.numel()) < self.border_frac)
        if sel.any():
            imgs[sel, :, -4:, -4:] = imgs.amax()  # ruleid: MLS309
            labels[sel] = self.num_classes - 1  # ruleid: MLS309
        return imgs, labels

    def __call__(self, batch):
        imgs, labels = self._stack(batch)
        imgs, labels = self._normalise_border(imgs, labels)
        targets = F.one_hot(labels, self.num_classes).float()
        if self.rng.random() < self.prob:
            lam = float(self.rng.beta(self.alpha, self.alpha))
            perm = torch.randperm(imgs.size(0))
            imgs = lam * imgs + (1.0 - lam) * imgs[perm]  # ok: MLS309
            targets = lam * targets + (1.0 - lam) * targets[perm]  # ok: MLS309
        return imgs.contiguous(memory_format=torch.channels_last), targets


def build_collate(cfg):
    return MixupCollate(
        num_classes=cfg["num_classes"],
        alpha=cfg.get("mixup_alpha", 0.2),
        prob=cfg.get("mixup_prob", 0.5),
        seed=cfg.get("seed", 0),
    )
