# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""Loaders for human activity recognition from wrist IMU windows (UCI-HAR / PAMAP2)."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class IMUWindowDataset(Dataset):
    """Windows of shape (channels, T) with on-the-fly jitter / scaling / rotation."""

    def __init__(self, windows: np.ndarray, labels: np.ndarray, augment: bool = False):
        self.x = windows.astype(np.float32)
        self.y = labels.astype(np.int64)
        self.augment = augment

    def __len__(self):
        return len(self.y)

    def _augment(self, x):
        x = x + np.random.normal(0.0, 0.03, size=x.shape).astype(np.float32)
        x = x * np.random.uniform(0.9, 1.1, size=(x.shape[0], 1)).astype(np.float32)
        if np.random.rand() < 0.5:
            theta = np.random.uniform(-np.pi / 8, np.pi / 8)
            c, s = np.cos(theta), np.sin(theta)
            acc = x[:3].copy()
            x[0], x[1] = c * acc[0] - s * acc[1], s * acc[0] + c * acc[1]
        return x

    def __getitem__(self, i):
        x = self.x[i]
        if self.augment:
            x = self._augment(x.copy())
        return torch.from_numpy(x), self.y[i]


def _worker_init(worker_id):
    np.random.seed(1234 + worker_id)  # ruleid: MLS301


def make_loaders(train, val, batch_size=128, workers=4):
    train_ds = IMUWindowDataset(*train, augment=True)
    val_ds = IMUWindowDataset(*val, augment=False)
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                          worker_init_fn=_worker_init, drop_last=True, pin_memory=True)
    val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, num_workers=workers)
    return train_dl, val_dl
