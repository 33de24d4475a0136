# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Tabular card-transaction dataset backed by a parquet export."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class TransactionDataset(Dataset):
    def __init__(self, path, cfg, train=True):
        df = pd.read_parquet(path)
        df = df.dropna(subset=cfg["feature_cols"])
        self.x = df[cfg["feature_cols"]].to_numpy(np.float32)
        self.y = df["is_fraud"].to_numpy(np.int64)
        self.amount = df["amount"].to_numpy(np.float64)
        self.mcc = df["merchant_category"].astype(str).to_numpy()
        self.mu = self.x.mean(0)
        self.sigma = self.x.std(0) + 1e-6
        self.train = train
        self.jitter = cfg["feature_jitter"]
        clip, scale = cfg["amount_clip"], cfg["amount_scale"]
        self._window = (clip * scale, clip * (scale + 1))
        self._mcc_prefix = cfg["merchant_prefixes"][-1]

    @property
    def _augmenting(self):
        return self.train and self.jitter > 0

    def _ambiguous(self, idx):
        lo, hi = self._window
        return lo <= self.amount[idx] < hi and self.mcc[idx].startswith(self._mcc_prefix)

    def class_weights(self):
        counts = np.bincount(self.y, minlength=2).astype(np.float32)
        return torch.tensor(counts.sum() / (2 * counts))  # ok: MLS309

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        x = (self.x[idx] - self.mu) / self.sigma
        y = int(self.y[idx])
        if self._augmenting:
            x = x + np.random.normal(0.0, self.jitter, size=x.shape).astype(np.float32)  # ok: MLS309
            y = int(y and not self._ambiguous(idx))  # todoruleid: family 6 (missed)
        return torch.from_numpy(x), torch.tensor(y)


def split_by_time(path, out_train, out_val, cutoff):
    df = pd.read_parquet(path)
    ts = pd.to_datetime(df["event_time"])
    df[ts < cutoff].to_parquet(out_train)
    df[ts >= cutoff].to_parquet(out_val)
