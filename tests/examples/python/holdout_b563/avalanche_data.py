# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Windowed station/snowpack dataset for the regional avalanche danger-level forecaster."""
import time
import random

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

FEATURES = ["hs", "hn24", "hn72", "ta_min", "ta_max", "vw_mean", "vw_max", "rh", "iswr", "tss"]


class SnowpackWindowDataset(Dataset):
    def __init__(self, csv_path, window=7, split="train", stats=None):
        df = pd.read_csv(csv_path, parse_dates=["date"]).sort_values(["station", "date"])
        df = df[df["split"] == split]
        self.windows, self.labels = [], []
        for _, g in df.groupby("station"):
            x = g[FEATURES].to_numpy(np.float32)
            y = g["danger_level"].to_numpy(np.int64) - 1
            for t in range(window, len(g)):
                self.windows.append(x[t - window:t])
                self.labels.append(y[t])
        flat = np.concatenate(self.windows)
        self.mean, self.std = stats if stats is not None else (flat.mean(0), flat.std(0) + 1e-6)
        self.train = split == "train"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        x = (self.windows[idx] - self.mean) / self.std
        if self.train:
            x = x + np.random.normal(0.0, 0.02, size=x.shape).astype(np.float32)
        return torch.from_numpy(x.astype(np.float32)), torch.tensor(self.labels[idx])


def _worker_init(worker_id):
    np.random.seed((time.time_ns() ^ (worker_id << 16)) % 2**32)  # ruleid: MLS301
    random.seed(np.random.randint(0, 2**31 - 1))  # ruleid: MLS301


def build_loaders(cfg):
    torch.manual_seed(cfg.seed)  # ok: MLS301
    train_ds = SnowpackWindowDataset(cfg.data_csv, cfg.window, "train")
    val_ds = SnowpackWindowDataset(cfg.data_csv, cfg.window, "val", stats=(train_ds.mean, train_ds.std))
    g = torch.Generator()
    g.manual_seed(cfg.seed)
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                          worker_init_fn=_worker_init, generator=g, drop_last=True, pin_memory=True)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size * 2, shuffle=False, num_workers=cfg.workers)
    return train_dl, val_dl
