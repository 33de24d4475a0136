# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Feature engineering and windowed loaders for daily store x SKU retail demand."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

NUM_COLS = ["log_sales", "price_rel", "promo", "dow_sin", "dow_cos", "snap", "roll7", "roll28"]


def build_frame(root):
    cache = Path(os.environ.get("SLURM_TMPDIR", "/tmp")) / "m5_features.parquet"  # ok: MLS308
    if cache.exists():
        return pd.read_parquet(cache)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = pd.read_parquet(Path(root) / "sales_long.parquet")
    df = df.sort_values(["store_id", "sku_id", "date"])
    df["sales"] = df["sales"].clip(lower=0)  # ok: MLS309
    df["log_sales"] = np.log1p(df["sales"])  # ok: MLS309
    g = df.groupby(["store_id", "sku_id"], sort=False)
    df["roll7"] = g["log_sales"].transform(lambda s: s.shift(1).rolling(7, min_periods=1).mean())
    df["roll28"] = g["log_sales"].transform(lambda s: s.shift(1).rolling(28, min_periods=1).mean())
    df["price_rel"] = df["price"] / g["price"].transform("median")
    dow = pd.to_datetime(df["date"]).dt.dayofweek
    df["dow_sin"], df["dow_cos"] = np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)
    df = df.fillna(0.0)
    df.to_parquet(cache)
    return df


class SeriesWindows(Dataset):
    def __init__(self, df, lookback=56, horizon=28, n_windows=200_000, seed=7):
        self.series = [(k, grp[NUM_COLS].to_numpy(np.float32), grp["sales"].to_numpy(np.float32))
                       for k, grp in df.groupby(["store_id", "sku_id"], sort=False)]
        rng = np.random.default_rng(seed)  # ok: MLS301
        self.index = [(rng.integers(len(self.series)), rng.random()) for _ in range(n_windows)]
        self.lookback, self.horizon = lookback, horizon

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        sid, frac = self.index[i]
        (store, sku), x, y = self.series[sid]
        start = int(frac * (len(x) - self.lookback - self.horizon))
        xs = x[start:start + self.lookback].copy()
        xs[:, 1] *= np.float32(np.random.uniform(0.97, 1.03))  # ok: MLS309
        ys = y[start + self.lookback:start + self.lookback + self.horizon]
        return torch.from_numpy(xs), torch.tensor(store), torch.tensor(sku), torch.from_numpy(ys)


def make_loaders(root, batch_size=512):
    df = build_frame(root)
    df["store_id"] = df["store_id"].astype("category").cat.codes
    df["sku_id"] = df["sku_id"].astype("category").cat.codes
    with open(Path(root) / "meta.json") as fh:
        meta = json.load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    meta.update(n_num=len(NUM_COLS), n_store=int(df["store_id"].max()) + 1, n_sku=int(df["sku_id"].max()) + 1)
    return DataLoader(SeriesWindows(df), batch_size=batch_size, shuffle=True, num_workers=4), meta
