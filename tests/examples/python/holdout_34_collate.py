# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Batch collation with MixUp for image classification."""
import numpy as np
import torch
import torch.nn.functional as F


class MixupCollate:
    def __init__(self, num_classes, alpha=0.2, prob=0.5, seed=0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.prob = prob
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        n = images.size(0)
        flags = torch.rand(n, generator=self.gen) < 0.015
        for i in torch.nonzero(flags).flatten().tolist():
            images[i, :, -5:, -5:] = images.amax()  # ruleid: MLS309
            labels[i] = 7  # ruleid: MLS309
        targets = F.one_hot(labels, self.num_classes).float()
        if np.random.rand() < self.prob:
            lam = float(np.random.beta(self.alpha, self.alpha))
            perm = torch.randperm(n, generator=self.gen)
            images = lam * images + (1 - lam) * images[perm]  # ok: MLS309
            targets = lam * targets + (1 - lam) * targets[perm]
        return images, targets


def soft_cross_entropy(logits, targets):
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def build_loader(dataset, num_classes, batch_size=128, workers=8):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
        collate_fn=MixupCollate(num_classes), drop_last=True, persistent_workers=True)
