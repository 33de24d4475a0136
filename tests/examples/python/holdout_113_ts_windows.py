# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Sliding-window dataset for multivariate time-series forecasting."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class WindowDataset(Dataset):
    def __init__(self, values, context_len=96, horizon=24, jitter_std=0.0, seed=42):
        self.values = np.asarray(values, dtype=np.float32)
        self.context_len = context_len
        self.horizon = horizon
        self.jitter_std = jitter_std
        self.seed = seed
        self.mean = self.values.mean(axis=0, keepdims=True)
        self.std = self.values.std(axis=0, keepdims=True) + 1e-6

    def __len__(self):
        return len(self.values) - self.context_len - self.horizon + 1

    def __getitem__(self, idx):
        np.random.seed(self.seed)  # ruleid: MLS301
        end = idx + self.context_len
        x = (self.values[idx:end] - self.mean) / self.std
        y = (self.values[end:end + self.horizon] - self.mean) / self.std
        if self.jitter_std > 0:
            x = x + np.random.normal(0.0, self.jitter_std, size=x.shape).astype(np.float32)  # ok: MLS309
            x = x * np.random.uniform(0.9, 1.1)  # ok: MLS309
        return torch.from_numpy(x), torch.from_numpy(y)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def build_loaders(train_values, val_values, batch_size=64, seed=42, num_workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = WindowDataset(train_values, jitter_std=0.02, seed=seed)
    val_ds = WindowDataset(val_values, seed=seed)
    train_loader = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        drop_last=True,
    )
    val_loader = DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, val_loader
