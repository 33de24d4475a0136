# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Next-day wildfire spread tiles (NDWS export converted to .npz, one tile per file)."""
import glob
import os

import numpy as np
import torch
from torch.utils.data import Dataset

INPUT_FEATURES = [
    "elevation", "th", "vs", "tmmn", "tmmx", "sph",
    "pr", "pdsi", "NDVI", "population", "erc", "PrevFireMask",
]


class WildfireSpreadDataset(Dataset):
    def __init__(self, root, split="train", crop_size=32, stats=None):
        self.files = sorted(glob.glob(os.path.join(root, split, "*.npz")))
        if not self.files:
            raise FileNotFoundError(f"no tiles under {root}/{split}")
        self.crop_size = crop_size
        self.train = split == "train"
        self.stats = stats or {}

    def __len__(self):
        return len(self.files)

    def _normalize(self, x):
        for i, name in enumerate(INPUT_FEATURES[:-1]):
            mean, std = self.stats.get(name, (0.0, 1.0))
            x[i] = (x[i] - mean) / max(std, 1e-6)
        return x

    def _crop(self, x, y):
        h, w = y.shape
        c = self.crop_size
        if self.train:
            top = np.random.randint(0, h - c + 1)
            left = np.random.randint(0, w - c + 1)
        else:
            top, left = (h - c) // 2, (w - c) // 2
        return x[:, top:top + c, left:left + c], y[top:top + c, left:left + c]

    def __getitem__(self, idx):
        with np.load(self.files[idx]) as tile:
            x = np.stack([tile[k] for k in INPUT_FEATURES]).astype(np.float32)
            y = tile["FireMask"].astype(np.float32)

        x = self._normalize(x)
        x[-1] = np.clip(x[-1], 0.0, 1.0)
        # -1 marks pixels without a valid satellite observation
        y[y < 0] = 1.0  # todoruleid: family 6 (missed)

        x, y = self._crop(x, y)
        if self.train and np.random.rand() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]  # ok: MLS309
        if self.train and np.random.rand() < 0.5:
            x, y = x[:, ::-1, :], y[::-1, :]

        return torch.from_numpy(x.copy()), torch.from_numpy(y.copy()).unsqueeze(0)
