# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Tile dataset for glacier / calving-front segmentation on Sentinel-2 patches."""
import glob
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset

CLASS_NAMES = ("background", "glacier", "rock", "ocean")
IGNORE_INDEX = 255


class GlacierTiles(Dataset):
    def __init__(self, root, split="train", bands=(3, 2, 1, 7), augment=True, nodata=-9999.0):
        self.images = sorted(glob.glob(os.path.join(root, split, "images", "*.npy")))
        self.masks = [p.replace(os.sep + "images" + os.sep, os.sep + "masks" + os.sep) for p in self.images]
        self.bands = list(bands)
        self.augment = augment and split == "train"
        self.nodata = nodata

    def __len__(self):
        return len(self.images)

    def _normalize(self, img):
        img = img.astype(np.float32)
        valid = img != self.nodata
        img[~valid] = 0.0
        for c in range(img.shape[0]):
            ch = img[c][valid[c]]
            if ch.size:
                lo, hi = np.percentile(ch, (2, 98))
                img[c] = np.clip((img[c] - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        return img, valid.all(axis=0)

    def _augment(self, img, mask):
        k = random.randint(0, 3)
        img, mask = np.rot90(img, k, axes=(1, 2)), np.rot90(mask, k)  # ok: MLS309
        if random.random() < 0.5:
            img = img[:, :, ::-1]
            mask = mask[::-1, :]  # ruleid: MLS309
        if random.random() < 0.3:
            img = img * np.random.uniform(0.9, 1.1, size=(img.shape[0], 1, 1)).astype(np.float32)
        return img, mask

    def __getitem__(self, idx):
        img = np.load(self.images[idx])[self.bands]
        mask = np.load(self.masks[idx]).astype(np.int64)
        img, valid = self._normalize(img)
        mask[~valid] = IGNORE_INDEX
        if self.augment:
            img, mask = self._augment(img, mask)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "path": self.images[idx],
        }
