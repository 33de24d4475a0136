# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Data loading for 30 s epoch sleep staging (Sleep-EDF / SHHS preprocessed npz)."""
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

STAGES = ("W", "N1", "N2", "N3", "REM")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class SleepEpochDataset(Dataset):
    """Returns a context window of `ctx` consecutive 30 s epochs centred on idx."""

    def __init__(self, recordings, ctx=5, jitter_s=2.0, fs=100, train=True):
        self.x = [np.load(r)["x"].astype(np.float32) for r in recordings]
        self.y = [np.load(r)["y"].astype(np.int64) for r in recordings]
        self.index = [(i, j) for i, y in enumerate(self.y) for j in range(ctx // 2, len(y) - ctx // 2)]
        self.ctx, self.fs, self.train = ctx, fs, train
        self.max_shift = int(jitter_s * fs)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, idx):
        rec, centre = self.index[idx]
        half = self.ctx // 2
        window = self.x[rec][centre - half:centre + half + 1]
        if self.train:
            shift = np.random.randint(-self.max_shift, self.max_shift + 1)
            window = np.roll(window.reshape(-1, window.shape[-1]), shift, axis=0).reshape(window.shape)
            window = window * np.random.uniform(0.9, 1.1)
        return torch.from_numpy(window), torch.tensor(self.y[rec][centre])


def _worker_init(worker_id: int) -> None:
    np.random.seed(int(time.time()) % (2 ** 32))  # ruleid: MLS301
    random.seed(torch.initial_seed() % (2 ** 32))


def build_loaders(train_recs, val_recs, batch_size=64, workers=8, ctx=5):
    train_ds = SleepEpochDataset(train_recs, ctx=ctx, train=True)
    val_ds = SleepEpochDataset(val_recs, ctx=ctx, train=False)
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                              worker_init_fn=_worker_init, pin_memory=True, drop_last=True,
                              persistent_workers=workers > 0)
    val_loader = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, num_workers=workers)
    return train_loader, val_loader
