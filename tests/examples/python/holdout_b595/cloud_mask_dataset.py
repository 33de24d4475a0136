# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Sentinel-2 cloud-mask tiles (L1C reflectance + manually labelled masks)."""
import glob
import os
import random

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
# per-band reflectance stats on the 2021 training scenes
MEAN = np.array([0.142, 0.131, 0.128, 0.247, 0.213, 0.161], dtype=np.float32)
STD = np.array([0.091, 0.088, 0.094, 0.112, 0.097, 0.083], dtype=np.float32)
IGNORE_INDEX = 255


class CloudTileDataset(Dataset):
    """Returns (C, H, W) float tensor and (H, W) mask in {0: clear, 1: cloud, 2: shadow}."""

    def __init__(self, root, split="train", crop=256, augment=True):
        self.masks = sorted(glob.glob(os.path.join(root, split, "*", "mask.tif")))
        if not self.masks:
            raise FileNotFoundError(f"no tiles under {root}/{split}")
        self.crop = crop
        self.augment = augment and split == "train"

    def __len__(self):
        return len(self.masks)

    def _read(self, mask_path):
        scene = os.path.dirname(mask_path)
        bands = []
        for b in BANDS:
            with rasterio.open(os.path.join(scene, f"{b}.tif")) as src:
                bands.append(src.read(1).astype(np.float32) / 10000.0)
        with rasterio.open(mask_path) as src:
            mask = src.read(1).astype(np.int64)
        nodata = bands[0] == 0
        mask[nodata] = IGNORE_INDEX
        return np.stack(bands), mask

    def _random_crop(self, img, mask):
        _, h, w = img.shape
        y = random.randint(0, h - self.crop)
        x = random.randint(0, w - self.crop)
        return img[:, y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]

    def __getitem__(self, idx):
        img, mask = self._read(self.masks[idx])
        img = (img - MEAN[:, None, None]) / STD[:, None, None]
        if self.augment:
            img, mask = self._random_crop(img, mask)
            if random.random() < 0.5:
                img, mask = img[:, :, ::-1], mask[:, ::-1]  # ok: MLS309
            k = random.randint(0, 3)
            img = np.rot90(img, k, axes=(1, 2))
            mask = np.rot90(mask, k, axes=(1, 0))  # ruleid: MLS309
        img = torch.from_numpy(np.ascontiguousarray(img))
        mask = torch.from_numpy(np.ascontiguousarray(mask))
        return img, mask
