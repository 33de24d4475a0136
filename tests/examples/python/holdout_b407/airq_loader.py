# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Sliding-window loaders for PM2.5 / NO2 station forecasting."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class StationWindowDataset(Dataset):
    """Returns (history, covariates, target) windows from a station x time array."""

    def __init__(self, values, covariates, history=72, horizon=24, mask_prob=0.1, train=True):
        self.values = values.astype(np.float32)
        self.covariates = covariates.astype(np.float32)
        self.history = history
        self.horizon = horizon
        self.mask_prob = mask_prob if train else 0.0
        n_stations, n_steps = self.values.shape
        self.index = [(s, t) for s in range(n_stations)
                      for t in range(history, n_steps - horizon)]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        s, t = self.index[i]
        hist = self.values[s, t - self.history:t].copy()
        if self.mask_prob > 0:
            np.random.seed(s * 7919 + self.history)  # ruleid: MLS301
            drop = np.random.rand(hist.shape[0]) < self.mask_prob
            hist[drop] = np.nan
        hist = np.nan_to_num(hist, nan=0.0)
        cov = self.covariates[:, t - self.history:t + self.horizon]
        target = self.values[s, t:t + self.horizon]
        return torch.from_numpy(hist), torch.from_numpy(cov), torch.from_numpy(target)


def _worker_init(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301
    random.seed(base + worker_id)


def make_loaders(train_ds, val_ds, batch_size=256, workers=8):
    train_loader = DataLoader(
        train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
        worker_init_fn=_worker_init, pin_memory=True,
        drop_last=True, persistent_workers=workers > 0,
    )
    val_loader = DataLoader(
        val_ds, batch_size=batch_size * 2, shuffle=False,
        num_workers=max(1, workers // 2), pin_memory=True,
    )
    return train_loader, val_loader
