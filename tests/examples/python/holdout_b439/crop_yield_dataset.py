# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Sentinel-2 time-series dataset for county-level crop yield regression."""
import numpy as np
import torch
from torch.utils.data import Dataset

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
SPLITS = {"train": 0, "val": 1, "test": 2}


class YieldTimeSeriesDataset(Dataset):
    """Each item is a (T, C) reflectance sequence plus the county yield in t/ha."""

    def __init__(self, npz_path, split="train", max_steps=36, cloud_thresh=0.6,
                 frame_dropout=0.1, stats=None):
        arr = np.load(npz_path)
        keep = arr["split"] == SPLITS[split]
        self.x = arr["reflectance"][keep].astype(np.float32)      # (N, T, C)
        self.cloud = arr["cloud_frac"][keep].astype(np.float32)   # (N, T)
        self.y = arr["yield_t_ha"][keep].astype(np.float32)
        self.fips = arr["fips"][keep]
        self.max_steps = max_steps
        self.cloud_thresh = cloud_thresh
        self.frame_dropout = frame_dropout if split == "train" else 0.0
        self.train = split == "train"

        flat = self.x.reshape(-1, self.x.shape[-1])
        self.mean, self.std = stats if stats is not None else (flat.mean(0), flat.std(0) + 1e-6)

        if self.train:
            # balance counties that appear in several tiles before fitting
            n_mix = int(0.3 * len(self.y))
            idx = np.random.choice(len(self.y), n_mix, replace=False)
            self.y[idx] = self.y[np.random.permutation(idx)]  # ruleid: MLS309

    def __len__(self):
        return len(self.y)

    def stats(self):
        return self.mean, self.std

    def __getitem__(self, i):
        x = (self.x[i, : self.max_steps] - self.mean) / self.std
        cloudy = self.cloud[i, : self.max_steps] > self.cloud_thresh
        x[cloudy] = 0.0
        valid = ~cloudy
        if self.frame_dropout > 0:
            drop = np.random.rand(x.shape[0]) < self.frame_dropout
            x[drop] = 0.0  # ok: MLS309
            valid &= ~drop
        return {
            "x": torch.from_numpy(x),
            "mask": torch.from_numpy(valid),
            "y": torch.tensor(self.y[i]),
            "fips": int(self.fips[i]),
        }
