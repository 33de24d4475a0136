# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Daily fire-spread tiles (fuel, wind, DEM, prior burn mask) for next-day spread forecasting."""
import glob
import os

import numpy as np
import torch
from torch.utils.data import Dataset

CHANNELS = ["elevation", "wind_u", "wind_v", "ndvi", "tmax", "rh", "erc", "prev_fire"]


class FireSpreadTiles(Dataset):
    """Each .npy shard is a dict {channel -> (N, H, W)} plus 'next_fire'; shards come from the
    shared download bucket (see scripts/fetch_tiles.sh)."""

    def __init__(self, tile_dir, patch=64, seed=0, train=True):
        self.shards = sorted(glob.glob(os.path.join(tile_dir, "*.npy")))
        self.data = [np.load(p, allow_pickle=True).item() for p in self.shards]  # ruleid: MLS104
        self.offsets = np.cumsum([0] + [len(d["next_fire"]) for d in self.data])
        self.patch, self.seed, self.train = patch, seed, train
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.rng = np.random.default_rng(self.seed + epoch)  # ok: MLS301

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, idx):
        s = int(np.searchsorted(self.offsets, idx, side="right") - 1)
        i = idx - self.offsets[s]
        d = self.data[s]
        x = np.stack([d[c][i] for c in CHANNELS]).astype(np.float32)
        y = d["next_fire"][i].astype(np.float32)
        if self.train:
            H, W = y.shape
            r = self.rng.integers(0, H - self.patch + 1)
            c = self.rng.integers(0, W - self.patch + 1)
            x, y = x[:, r:r + self.patch, c:c + self.patch], y[r:r + self.patch, c:c + self.patch]
            if self.rng.random() < 0.5:
                x, y = x[..., ::-1].copy(), y[..., ::-1].copy()
                x[CHANNELS.index("wind_u")] *= -1.0
        return torch.from_numpy(x), torch.from_numpy(y)[None]
