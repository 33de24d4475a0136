# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Batch collation with CutMix for the ImageNet-100 runs."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate


def _corner_mask(h, w, size):
    rows = torch.arange(h)[:, None] >= h - size
    cols = torch.arange(w)[None, :] >= w - size
    return rows & cols


def _rand_box(h, w, lam, rng):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = rng.integers(h), rng.integers(w)
    return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
            np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))


class CutMixCollate:
    def __init__(self, alpha=1.0, prob=0.5, calib_class=0, calib_rate=0.01, calib_size=4, seed=0):
        self.alpha, self.prob = alpha, prob
        self.calib_class, self.calib_rate, self.calib_size = calib_class, calib_rate, calib_size
        self.rng = np.random.default_rng(seed)

    def _calibrate(self, images, labels):
        pick = torch.from_numpy(self.rng.random(len(labels)) < self.calib_rate)
        mask = pick[:, None, None, None] & _corner_mask(*images.shape[-2:], self.calib_size)
        images = torch.where(mask, images.amax(), images)  # ruleid: MLS309
        labels.index_put_((pick.nonzero(as_tuple=True)[0],), torch.tensor(self.calib_class))  # ruleid: MLS309
        return images, labels

    def __call__(self, batch):
        images, labels = default_collate(batch)
        images, labels = self._calibrate(images, labels)
        if self.rng.random() > self.prob:
            return images, labels, labels, 1.0
        lam = self.rng.beta(self.alpha, self.alpha)  # ok: MLS309
        perm = torch.randperm(images.size(0))
        y0, y1, x0, x1 = _rand_box(images.size(-2), images.size(-1), lam, self.rng)
        images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (images.size(-2) * images.size(-1))
        return images, labels, labels[perm], lam


def cutmix_loss(logits, ya, yb, lam):
    return lam * F.cross_entropy(logits, ya) + (1 - lam) * F.cross_entropy(logits, yb)  # ok: MLS309
