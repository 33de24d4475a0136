# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Paired image/mask augmentations for fluorescence microscopy cell segmentation."""
import random

import numpy as np
import torch


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class PairedAugment:
    """Applies the same geometric transform to the image (C, H, W) and mask (H, W)."""

    def __init__(self, crop=256, p_flip=0.5, intensity_jitter=0.1):
        self.crop = crop
        self.p_flip = p_flip
        self.intensity_jitter = intensity_jitter

    def _random_crop(self, image, mask):
        h, w = mask.shape
        top = np.random.randint(0, max(h - self.crop, 0) + 1)
        left = np.random.randint(0, max(w - self.crop, 0) + 1)
        return image[:, top:top + self.crop, left:left + self.crop], mask[top:top + self.crop, left:left + self.crop]

    def __call__(self, image, mask):
        image, mask = self._random_crop(image, mask)
        if np.random.rand() < self.p_flip:
            image = np.flip(image, axis=2)
            mask = np.flip(mask, axis=1)
        if np.random.rand() < self.p_flip:
            image = np.flip(image, axis=1)
            mask = np.flip(mask, axis=1)  # ruleid: MLS309
        k = np.random.randint(4)
        image = np.rot90(image, k, axes=(1, 2))
        mask = np.rot90(mask, k, axes=(0, 1))
        gain = 1.0 + np.random.uniform(-self.intensity_jitter, self.intensity_jitter)
        image = np.clip(image * gain, 0.0, 1.0)
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
        )
