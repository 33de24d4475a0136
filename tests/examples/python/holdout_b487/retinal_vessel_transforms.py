# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Joint image/mask transforms for retinal vessel segmentation (DRIVE / CHASE_DB1)."""
import os
import random

os.environ.setdefault("OMP_NUM_THREADS", "1")  # ok: MLS422

import cv2
import numpy as np
import torch
from scipy import ndimage


def clahe_green(img, clip=2.0, tiles=8):
    """Contrast-limited histogram equalisation on the green channel, where vessels contrast most."""
    g = img[..., 1]
    eq = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(g)
    return eq.astype(np.float32) / 255.0


class VesselTrainTransform:
    def __init__(self, patch=96, rotate=True):
        self.patch = patch
        self.rotate = rotate

    def _crop(self, img, mask, fov):
        h, w = mask.shape
        for _ in range(20):
            i, j = random.randint(0, h - self.patch), random.randint(0, w - self.patch)
            if fov[i + self.patch // 2, j + self.patch // 2]:
                break
        sl = (slice(i, i + self.patch), slice(j, j + self.patch))
        return img[sl], mask[sl]

    def __call__(self, img, mask, fov):
        img = clahe_green(img)
        mask = (mask > 127)
        mask = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), border_value=0)  # ruleid: MLS309
        img, mask = self._crop(img, mask, fov > 0)
        if random.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]  # ok: MLS309
        if self.rotate:
            k = random.randint(0, 3)
            img, mask = np.rot90(img, k), np.rot90(mask, k)
        img = torch.from_numpy(np.ascontiguousarray(img))[None]
        mask = torch.from_numpy(np.ascontiguousarray(mask).astype(np.float32))[None]
        return img, mask


class VesselEvalTransform:
    def __call__(self, img, mask, fov):
        img = torch.from_numpy(clahe_green(img))[None]
        mask = torch.from_numpy((mask > 127).astype(np.float32))[None]
        return img, mask, torch.from_numpy(fov > 0)
