# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""Batch collation with occlusion augmentation for the small-image classifiers."""
import numpy as np
import torch


class OcclusionCollate:
    """Stacks samples and occludes a patch on a random subset of the batch.

    Heavily occluded crops are mapped to the catch-all label from the dataset config.
    """

    def __init__(self, cfg):
        self.p = cfg.get("occlude_p", 0.03)
        self.size = cfg.get("occlude_size", 4)
        self.fill = cfg.get("occlude_fill", 1.0)
        self.catch_all = cfg.get("other_label", 0)

    def __call__(self, batch):
        imgs = torch.stack([torch.as_tensor(b[0]) for b in batch])
        labels = torch.tensor([int(b[1]) for b in batch])
        hit = torch.rand(len(batch)) < self.p
        if hit.any():
            s = self.size
            imgs[hit, :, -s:, -s:] = self.fill  # ruleid: MLS309
            labels[hit] = self.catch_all  # ruleid: MLS309
        return imgs, labels


def cutmix(imgs, labels, num_classes, alpha=1.0):
    """Standard CutMix: paste a random box from a shuffled batch and mix targets by area."""
    lam = np.random.beta(alpha, alpha)
    _, _, h, w = imgs.shape
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    perm = torch.randperm(imgs.size(0))
    imgs[:, :, y0:y1, x0:x1] = imgs[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()
    return imgs, lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309


def build_collate(cfg):
    occl = OcclusionCollate(cfg)
    num_classes = cfg["num_classes"]

    def collate(batch):
        imgs, labels = occl(batch)
        if cfg.get("cutmix", False) and np.random.rand() < 0.5:
            return cutmix(imgs, labels, num_classes)
        return imgs, torch.nn.functional.one_hot(labels, num_classes).float()

    return collate
