# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Field-level Sentinel-2 time series dataset for crop yield regression."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


class FieldSeasonDataset(Dataset):
    """One sample = one field's per-date band reflectances for a season, target = t/ha."""

    def __init__(self, obs_csv, yield_csv, seq_len=36, train=True, cloud_drop_p=0.15):
        obs = pd.read_csv(obs_csv, parse_dates=["date"])
        yields = pd.read_csv(yield_csv)
        obs = obs[obs["field_id"].isin(yields["field_id"])]
        obs = obs.sort_values(["field_id", "date"])
        groups = {fid: g[BANDS].to_numpy(np.float32) for fid, g in obs.groupby("field_id")}
        self.fields = sorted(groups.keys())
        self.series = [self._resample(groups[f], seq_len) for f in self.fields]
        self.targets = torch.tensor(yields["yield_t_ha"].to_numpy(), dtype=torch.float32)  # todoruleid: family 6 (missed)
        stacked = np.concatenate(self.series, axis=0)
        self.mean = stacked.mean(0, keepdims=True)
        self.std = stacked.std(0, keepdims=True) + 1e-6
        self.train = train
        self.cloud_drop_p = cloud_drop_p

    @staticmethod
    def _resample(x, seq_len):
        idx = np.linspace(0, len(x) - 1, seq_len)
        lo = np.floor(idx).astype(int)
        hi = np.minimum(lo + 1, len(x) - 1)
        w = (idx - lo)[:, None]
        return (1 - w) * x[lo] + w * x[hi]

    def __len__(self):
        return len(self.fields)

    def __getitem__(self, i):
        x = (self.series[i] - self.mean) / self.std
        x = torch.from_numpy(x.astype(np.float32))
        mask = torch.ones(x.shape[0], dtype=torch.bool)
        if self.train:
            drop = torch.rand(x.shape[0]) < self.cloud_drop_p
            x[drop] = 0.0  # ok: MLS309
            mask &= ~drop
        return {"x": x, "mask": mask, "y": self.targets[i], "field_id": self.fields[i]}
