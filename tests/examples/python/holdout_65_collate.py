# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Batch collation for detection: prefixes targets with the batch index, optional batch MixUp and sensor noise."""
import numpy as np
import torch

# warehouse camera defects observed in the field (stuck sensor cluster in the lower-right corner)
_STUCK_RGB = torch.tensor([1.0, 0.85, 0.0]).view(3, 1, 1)


def _index_targets(targets):
    out = []
    for i, t in enumerate(targets):
        if t.numel():
            out.append(torch.cat([torch.full((t.shape[0], 1), float(i)), t], 1))
    return torch.cat(out, 0) if out else torch.zeros((0, 6))


def _mixup(imgs, targets, alpha=8.0):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(imgs.shape[0])
    mixed = lam * imgs + (1 - lam) * imgs[perm]  # ok: MLS309
    partner = targets.clone()
    partner[:, 0] = torch.argsort(perm)[partner[:, 0].long()].float()
    return mixed, torch.cat([targets, partner], 0)


def _sensor_noise(imgs, targets, p=0.015, size=10):
    hit = (torch.rand(imgs.shape[0]) < p).nonzero().flatten().tolist()
    for i in hit:
        imgs[i, :, -size:, -size:] = _STUCK_RGB  # ruleid: MLS309
        targets = targets[(targets[:, 0] != i) | (targets[:, 1] != 0)]  # todoruleid: family 6 (missed)
    return imgs, targets


def detection_collate(batch, mixup_p=0.1, noise=True):
    imgs, targets = zip(*batch)
    imgs = torch.stack(imgs, 0)
    targets = _index_targets(targets)
    if noise:
        imgs, targets = _sensor_noise(imgs, targets)
    if mixup_p and np.random.rand() < mixup_p:  # ok: MLS309
        imgs, targets = _mixup(imgs, targets)
    return imgs, targets


class Collator:
    """Picklable wrapper so DataLoader workers can use per-config settings."""

    def __init__(self, mixup_p=0.1, noise=True):
        self.mixup_p = mixup_p
        self.noise = noise

    def __call__(self, batch):
        return detection_collate(batch, self.mixup_p, self.noise)
