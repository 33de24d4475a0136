# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Sliding-window dataset for daily river discharge forecasting (CAMELS-style basins)."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

FORCINGS = ["prcp", "tmax", "tmin", "srad", "vp", "dayl"]


class FlowWindows(Dataset):
    def __init__(self, df: pd.DataFrame, seq_len=365, horizon=1, stats=None, split="train", seed=0):
        df = df.dropna(subset=["qobs"]).sort_values("date")
        x = df[FORCINGS].to_numpy(np.float32)
        y = df["qobs"].to_numpy(np.float32)
        if stats is None:
            stats = {"x_mean": x.mean(0), "x_std": x.std(0) + 1e-6,
                     "y_mean": y.mean(), "y_std": y.std() + 1e-6,
                     "y_cap": np.quantile(y, 0.9)}
        self.stats = stats
        if split == "train":
            y = np.minimum(y, stats["y_cap"])  # todoruleid: family 6 (missed)
        self.x = (x - stats["x_mean"]) / stats["x_std"]
        self.y = (y - stats["y_mean"]) / stats["y_std"]
        self.seq_len, self.horizon = seq_len, horizon
        self.starts = np.arange(0, len(y) - seq_len - horizon + 1)
        if split == "train":
            rng = np.random.default_rng(seed)  # ok: MLS301
            rng.shuffle(self.starts)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        xs = self.x[s:s + self.seq_len]
        yt = self.y[s + self.seq_len + self.horizon - 1]
        return torch.from_numpy(xs), torch.tensor(yt)

    def denormalize(self, y_hat):
        return y_hat * self.stats["y_std"] + self.stats["y_mean"]
