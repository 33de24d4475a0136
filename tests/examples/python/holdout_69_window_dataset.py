# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Sliding-window dataset for multivariate forecasting.

Turns a (T, C) array into (context, horizon) pairs with a configurable stride
and provides a loader factory with reproducible per-worker seeding.
"""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class SlidingWindowDataset(Dataset):
    def __init__(self, values, context_len=168, horizon=24, stride=1, jitter=0.0):
        self.values = torch.as_tensor(np.asarray(values), dtype=torch.float32)
        self.context_len = context_len
        self.horizon = horizon
        self.jitter = jitter
        span = context_len + horizon
        self.starts = list(range(0, len(self.values) - span + 1, stride))

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, idx):
        s = self.starts[idx]
        x = self.values[s : s + self.context_len].clone()
        y = self.values[s + self.context_len : s + self.context_len + self.horizon]
        if self.jitter > 0 and random.random() < 0.5:  # ok: MLS309
            x = x + self.jitter * torch.randn_like(x) * x.std(0, keepdim=True)
        return x, y


def _init_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
    torch.manual_seed(worker_seed ^ os.getpid())  # ruleid: MLS301


def make_loaders(train_values, val_values, context_len=168, horizon=24,
                 batch_size=64, workers=4, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = SlidingWindowDataset(train_values, context_len, horizon, stride=1, jitter=0.02)
    val_ds = SlidingWindowDataset(val_values, context_len, horizon, stride=horizon)
    train_dl = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        worker_init_fn=_init_worker,
        generator=g,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, num_workers=workers)
    return train_dl, val_dl
