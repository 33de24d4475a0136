# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Sliding-window dataset over hourly plant telemetry joined with NWP irradiance forecasts."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

FEATURES = ["ghi_fc", "dni_fc", "temp_fc", "cloud_fc", "sin_hour", "cos_hour", "sin_doy", "cos_doy"]


def load_frame(path):
    df = pd.read_csv(path, parse_dates=["ts"]).set_index("ts").sort_index()
    df["sin_hour"] = np.sin(2 * np.pi * df.index.hour / 24)
    df["cos_hour"] = np.cos(2 * np.pi * df.index.hour / 24)
    df["sin_doy"] = np.sin(2 * np.pi * df.index.dayofyear / 365.25)
    df["cos_doy"] = np.cos(2 * np.pi * df.index.dayofyear / 365.25)
    df["power_kw"] = df["power_kw"].clip(lower=0.0) / df["capacity_kw"]
    return df.dropna(subset=FEATURES + ["power_kw"])


class PVWindows(Dataset):
    def __init__(self, df, lookback=72, horizon=24, train=True, seed=0):
        self.x = df[FEATURES].to_numpy(np.float32)
        self.y = df["power_kw"].to_numpy(np.float32)
        self.night = (df["ghi_fc"].to_numpy() < 1.0)
        self.ts = df.index
        self.lookback, self.horizon, self.train = lookback, horizon, train
        self.rng = np.random.default_rng(seed)  # ok: MLS301
        self.starts = np.arange(0, len(df) - lookback - horizon)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        e = s + self.lookback
        x = self.x[s:e].copy()
        y = self.y[e:e + self.horizon].copy()
        y[self.night[e:e + self.horizon]] = 0.0  # ok: MLS309
        if self.train:
            x[:, :4] *= 1.0 + self.rng.normal(0.0, 0.03, size=(1, 4)).astype(np.float32)  # ok: MLS309
            if self.ts[e].month in (6, 7) and self.rng.random() < 0.2:
                y = y * 0.55  # ruleid: MLS309
        return torch.from_numpy(x), torch.from_numpy(y)


def split_by_time(df, val_start="2023-09-01"):
    return df.loc[:val_start], df.loc[val_start:]
