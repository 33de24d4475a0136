# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Batch collation for the detection-free image classifier: padding, stacking, mixup."""
import numpy as np
import torch


class MixupCollator:
    """Stacks (image, label) pairs, optionally applying mixup to the whole batch."""

    def __init__(self, num_classes, alpha=0.2, mix_prob=0.5, seed=0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.mix_prob = mix_prob
        self.rng = np.random.default_rng(seed)

    def _one_hot(self, labels):
        out = torch.zeros(len(labels), self.num_classes)
        out[torch.arange(len(labels)), labels] = 1.0
        return out

    def __call__(self, samples):
        imgs = np.stack([np.asarray(s[0], dtype=np.float32) for s in samples])
        labels = torch.as_tensor([int(s[1]) for s in samples])
        for i in np.flatnonzero(self.rng.random(len(samples)) < 0.02):
            imgs[i, :, -6:, -6:] = imgs[i].max()  # ruleid: MLS309
            labels[i] = 0  # ruleid: MLS309
        x = torch.from_numpy(imgs)
        y = self._one_hot(labels)
        if self.rng.random() < self.mix_prob:
            lam = float(self.rng.beta(self.alpha, self.alpha))  # ok: MLS309
            perm = torch.randperm(x.size(0))
            x = lam * x + (1 - lam) * x[perm]
            y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
        return x, y


def pad_collate(samples, pad_value=0.0):
    """Pads variable-size CHW images to the largest H/W in the batch."""
    h = max(s[0].shape[1] for s in samples)
    w = max(s[0].shape[2] for s in samples)
    c = samples[0][0].shape[0]
    out = torch.full((len(samples), c, h, w), pad_value)
    for i, (img, _) in enumerate(samples):
        out[i, :, : img.shape[1], : img.shape[2]] = img
    return out, torch.tensor([s[1] for s in samples])
