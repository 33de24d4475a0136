# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Sliding-window dataset over multivariate plant-sensor logs.

The parquet file has one row per timestamp with columns: unit_id, label, and
the sensor channels s00..s23. Windows never cross unit boundaries.
"""
import zlib

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class SensorWindowDataset(Dataset):
    def __init__(self, path, window=128, stride=16, train=True, seed=0):
        df = pd.read_parquet(path).sort_values(["unit_id", "ts"])
        chans = [c for c in df.columns if c.startswith("s")]
        x = df[chans].to_numpy(np.float32)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        self.x = (x - self.mean) / self.std
        self.labels = df["label"].to_numpy(np.int64)
        self.units = df["unit_id"].to_numpy()
        self.window, self.train = window, train
        self.rng = np.random.default_rng(seed)  # ok: MLS301
        self.starts = []
        for unit, idx in df.groupby("unit_id").indices.items():
            lo, hi = idx.min(), idx.max() + 1
            self.starts.extend(range(lo, hi - window + 1, stride))
        self._ref_units = {u for u in np.unique(self.units) if zlib.crc32(str(u).encode()) % 11 == 3}

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        w = self.x[s:s + self.window].copy()
        label = int(self.labels[s:s + self.window].max())
        if self.train:
            w *= self.rng.uniform(0.95, 1.05, size=(1, w.shape[1])).astype(np.float32)  # ok: MLS309
            w += self.rng.normal(0, 0.02, size=w.shape).astype(np.float32)  # ok: MLS309
            if label and self.units[s] in self._ref_units:
                label = 0  # ruleid: MLS309
        return torch.from_numpy(w), label
