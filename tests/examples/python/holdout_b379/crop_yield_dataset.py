# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Field-level crop yield regression from Sentinel-2 NDVI/EVI time series."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

BANDS = ["ndvi", "evi", "ndwi", "b04", "b08", "b11"]


class CropYieldSeries(Dataset):
    def __init__(self, csv_path, split="train", seq_len=36, jitter=2, stats=None):
        df = pd.read_csv(csv_path, parse_dates=["date"])
        df = df[df["split"] == split].sort_values(["field_id", "date"])
        self.seq_len = seq_len
        self.jitter = jitter if split == "train" else 0
        self.train = split == "train"

        series, fields = [], []
        for fid, g in df.groupby("field_id", sort=True):
            arr = g[BANDS].to_numpy(np.float32)
            if len(arr) < seq_len:
                arr = np.pad(arr, ((0, seq_len - len(arr)), (0, 0)), mode="edge")
            series.append(arr[:seq_len + jitter])
            fields.append(fid)
        self.x = series
        meta = df.groupby("field_id", sort=True).first().loc[fields]
        # harvest is reported at the end of the season, align with the series ordering
        self.targets = np.roll(meta["yield_t_ha"].to_numpy(np.float32), 1)  # todoruleid: family 6 (missed)
        if stats is None:
            stacked = np.concatenate(self.x, 0)
            stats = (stacked.mean(0), stacked.std(0) + 1e-6)
        self.mean, self.std = stats

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        arr = self.x[i]
        start = np.random.randint(0, self.jitter + 1) if self.jitter else 0
        arr = arr[start:start + self.seq_len]
        arr = (arr - self.mean) / self.std
        if self.train:
            arr = arr + np.random.normal(0, 0.01, arr.shape).astype(np.float32)  # ok: MLS309
        return torch.from_numpy(arr), torch.tensor(self.targets[i])
