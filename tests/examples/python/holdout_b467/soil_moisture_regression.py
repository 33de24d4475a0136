# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Sensor + remote-sensing windows for soil moisture regression."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

FEATURES = ["precip_mm", "air_temp_c", "ndvi", "lst_k", "sar_vv_db", "sar_vh_db", "clay_frac"]
TARGET = "vwc_5cm"


class SoilWindowDataset(Dataset):
    def __init__(self, csv_path, window=14, noise_std=0.02, seed=0, train=True):
        df = pd.read_csv(csv_path, parse_dates=["date"]).sort_values(["station", "date"])
        self.window, self.noise_std, self.seed, self.train = window, noise_std, seed, train
        self.mean = df[FEATURES].mean().values.astype(np.float32)
        self.std = df[FEATURES].std().values.astype(np.float32) + 1e-6
        self.index = []
        self.groups = {}
        for station, g in df.groupby("station"):
            x = ((g[FEATURES].values - self.mean) / self.std).astype(np.float32)
            y = g[TARGET].values.astype(np.float32)
            self.groups[station] = (x, y)
            self.index += [(station, t) for t in range(window, len(g))]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        station, t = self.index[i]
        x, y = self.groups[station]
        window = x[t - self.window:t].copy()
        if self.train:
            rng = np.random.default_rng(self.seed)  # ruleid: MLS301
            window += rng.normal(0.0, self.noise_std, size=window.shape).astype(np.float32)
        return torch.from_numpy(window), torch.tensor(y[t])


def _worker_init(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301


def make_loader(csv_path, batch_size=128, train=True, workers=4):
    ds = SoilWindowDataset(csv_path, train=train)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=workers,
                      worker_init_fn=_worker_init, drop_last=train)
