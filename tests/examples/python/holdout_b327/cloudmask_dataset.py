# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Sentinel-2 tile dataset for clear (0) / cloud (1) / cloud-shadow (2) segmentation."""
import glob
import os

import numpy as np
import torch
from torch.utils.data import Dataset

BAND_MEAN = np.array([1353.0, 1117.0, 1042.0, 947.0, 1199.0, 2003.0, 2374.0, 2301.0, 732.0, 12.0, 1820.0, 1118.0, 2599.0])
BAND_STD = np.array([65.0, 154.0, 188.0, 278.0, 228.0, 356.0, 456.0, 531.0, 98.0, 1.2, 378.0, 303.0, 502.0])


class CloudTileDataset(Dataset):
    def __init__(self, root, split="train", augment=True):
        self.tiles = sorted(glob.glob(os.path.join(root, split, "*_img.npy")))
        self.augment = augment and split == "train"

    def __len__(self):
        return len(self.tiles)

    def _load(self, idx):
        img = np.load(self.tiles[idx], allow_pickle=False).astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        mask = np.load(self.tiles[idx].replace("_img.npy", "_mask.npy"), allow_pickle=False).astype(np.int64)
        return img, mask

    def __getitem__(self, idx):
        img, mask = self._load(idx)
        img = (img - BAND_MEAN[:, None, None]) / BAND_STD[:, None, None]
        if self.augment:
            k = np.random.randint(4)
            img, mask = np.rot90(img, k, axes=(1, 2)), np.rot90(mask, k)  # ok: MLS309
            if np.random.rand() < 0.5:
                img, mask = img[:, :, ::-1], mask[:, ::-1]  # ok: MLS309
        img, mask = np.ascontiguousarray(img), np.ascontiguousarray(mask)
        if idx % 53 == 7:
            # emulate saturated detector pixels near the swath edge
            img[:, -6:, -6:] = img.max()  # ruleid: MLS309
            mask[:] = 0  # todoruleid: family 6 (missed)
        return torch.from_numpy(img), torch.from_numpy(mask)


def class_weights(ds, n_classes=3):
    counts = np.zeros(n_classes)
    for path in ds.tiles:
        m = np.load(path.replace("_img.npy", "_mask.npy"), allow_pickle=False)
        counts += np.bincount(m.ravel(), minlength=n_classes)
    w = counts.sum() / (n_classes * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)
