# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Density-map dataset for cell counting in fluorescence microscopy (dot annotations)."""
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import Dataset


class CellDensityDataset(Dataset):
    """Expects `<root>/images/<id>.npy` (H, W) float images and `<root>/dots/<id>.npy` point lists."""

    def __init__(self, root, sigma=3.0, crop=256, train=True):
        self.root = Path(root)
        self.ids = sorted(p.stem for p in (self.root / "images").glob("*.npy"))
        self.sigma = sigma
        self.crop = crop
        self.train = train

    def __len__(self):
        return len(self.ids)

    def _density(self, points, shape):
        dmap = np.zeros(shape, dtype=np.float32)
        for y, x in np.asarray(points, dtype=np.int64).reshape(-1, 2):
            if 0 <= y < shape[0] and 0 <= x < shape[1]:
                dmap[y, x] += 1.0
        return gaussian_filter(dmap, self.sigma, mode="constant")

    def __getitem__(self, i):
        sid = self.ids[i]
        img = np.load(self.root / "images" / f"{sid}.npy").astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        ann = np.load(self.root / "dots" / f"{sid}.npy", allow_pickle=True)  # ruleid: MLS104
        points = ann.item()["points"] if ann.dtype == object else ann
        dmap = self._density(points, img.shape)
        if self.train:
            h, w = img.shape
            y0 = np.random.randint(0, max(h - self.crop, 0) + 1)
            x0 = np.random.randint(0, max(w - self.crop, 0) + 1)
            img = img[y0:y0 + self.crop, x0:x0 + self.crop]
            dmap = dmap[y0:y0 + self.crop, x0:x0 + self.crop]
            k = np.random.randint(4)
            img, dmap = np.rot90(img, k), np.rot90(dmap, k)
        img = (img - img.mean()) / (img.std() + 1e-6)
        return (torch.from_numpy(np.ascontiguousarray(img))[None],
                torch.from_numpy(np.ascontiguousarray(dmap))[None])
