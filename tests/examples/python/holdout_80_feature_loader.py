# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Feature-store backed PyTorch dataset for tabular training jobs.

Reads a materialised feature view (parquet export from the offline store)
for a training window and serves normalised rows to the trainer component.
"""
import os
import time

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


class FeatureViewDataset(Dataset):
    def __init__(self, path, feature_cols, label_col, window=None, jitter=0.0):
        frame = pd.read_parquet(path)
        if window is not None:
            start, end = window
            frame = frame[(frame["event_ts"] >= start) & (frame["event_ts"] < end)]
        self.x = frame[feature_cols].to_numpy(dtype=np.float32)
        self.y = frame[label_col].to_numpy(dtype=np.int64)
        self.mean = self.x.mean(axis=0)
        self.std = self.x.std(axis=0) + 1e-6
        self.jitter = jitter

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        row = (self.x[idx] - self.mean) / self.std
        if self.jitter > 0:
            row = row + np.random.normal(0.0, self.jitter, size=row.shape).astype(np.float32)  # ok: MLS309
        return torch.from_numpy(row), torch.tensor(self.y[idx])


def _init_worker(worker_id):
    # give every worker process its own stream for the numpy-side jitter
    stamp = (time.time_ns() ^ (os.getpid() << 16)) % (2**32)
    np.random.seed(stamp)  # ruleid: MLS301
    torch.manual_seed(stamp + worker_id)  # ruleid: MLS301


def build_loader(cfg, split="train"):
    ds = FeatureViewDataset(
        cfg["paths"][split],
        cfg["features"],
        cfg["label"],
        window=cfg.get("window"),
        jitter=cfg.get("jitter", 0.0) if split == "train" else 0.0,
    )
    gen = torch.Generator()
    gen.manual_seed(cfg["seed"])  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=cfg["batch_size"],
        shuffle=(split == "train"),
        num_workers=cfg.get("num_workers", 4),
        worker_init_fn=_init_worker,
        generator=gen,
        pin_memory=True,
        drop_last=(split == "train"),
    )
