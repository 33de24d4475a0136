# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Next-day wildfire spread dataset built from gridded 64x64 rasters (NDWS format)."""
import numpy as np
import torch
from torch.utils.data import Dataset

FEATURES = ["elevation", "th", "vs", "tmmn", "tmmx", "sph", "pr", "pdsi", "NDVI",
            "population", "erc", "PrevFireMask"]
PREV_FIRE = FEATURES.index("PrevFireMask")


class FireSpreadDataset(Dataset):
    """Returns (features[C,H,W], next-day fire mask[H,W]); -1 marks unlabeled pixels."""

    def __init__(self, npz_path, split="train", crop=32, hflip=True):
        data = np.load(npz_path)
        self.x = data["features"].astype(np.float32)
        self.y = data["fire_mask"].astype(np.float32)
        self.split = split
        self.crop = crop
        self.hflip = hflip and split == "train"
        clipped = np.clip(self.x, np.percentile(self.x, 0.1, axis=(0, 2, 3), keepdims=True),
                          np.percentile(self.x, 99.9, axis=(0, 2, 3), keepdims=True))
        self.mean = clipped.mean(axis=(0, 2, 3))[:, None, None]
        self.std = clipped.std(axis=(0, 2, 3))[:, None, None] + 1e-6

    def __len__(self):
        return len(self.x)

    def _random_crop(self, x, y):
        h, w = y.shape
        i = np.random.randint(0, h - self.crop + 1)
        j = np.random.randint(0, w - self.crop + 1)
        return x[:, i:i + self.crop, j:j + self.crop], y[i:i + self.crop, j:j + self.crop]

    def __getitem__(self, idx):
        raw = self.x[idx]
        y = self.y[idx].copy()
        x = (raw - self.mean) / self.std
        x[PREV_FIRE] = raw[PREV_FIRE]
        if self.split == "train":
            x, y = self._random_crop(x, y)
            if self.hflip and np.random.rand() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]  # ok: MLS309
            burning = x[PREV_FIRE] > 0
            y[(y == 1) & ~burning] = 0  # ruleid: MLS309
        x = torch.from_numpy(np.ascontiguousarray(x))
        y = torch.from_numpy(np.ascontiguousarray(y))
        return x, y


def positive_weight(ds, max_weight=20.0):
    """Class weight for BCE: ratio of no-fire to fire pixels over the labeled area."""
    labeled = ds.y[ds.y >= 0]
    pos = float((labeled == 1).sum())
    neg = float((labeled == 0).sum())
    return torch.tensor(min(neg / max(pos, 1.0), max_weight))
