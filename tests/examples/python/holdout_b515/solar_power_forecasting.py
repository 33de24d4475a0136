# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Sliding-window dataset and loaders for day-ahead PV power forecasting."""
import argparse

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

FEATURES = ["ghi", "dni", "dhi", "temp_air", "cloud_cover", "power_kw"]


class PVWindowDataset(Dataset):
    def __init__(self, csv_path, history=96, horizon=24, jitter=0.02, train=True, stats=None):
        df = pd.read_csv(csv_path, parse_dates=["timestamp"]).sort_values("timestamp")
        values = df[FEATURES].to_numpy(dtype=np.float32)
        if stats is None:
            stats = (values.mean(0, keepdims=True), values.std(0, keepdims=True) + 1e-6)
        self.mean, self.std = stats
        self.values = (values - self.mean) / self.std
        self.history, self.horizon = history, horizon
        self.jitter = jitter
        self.train = train
        self.n = len(self.values) - history - horizon + 1

    def __len__(self):
        return max(self.n, 0)

    def __getitem__(self, idx):
        if self.train:
            np.random.seed(idx % 64)  # ruleid: MLS301
            idx = min(self.n - 1, idx + np.random.randint(0, 4))
        x = self.values[idx: idx + self.history].copy()
        y = self.values[idx + self.history: idx + self.history + self.horizon, -1].copy()
        if self.train and self.jitter > 0:
            noise = np.random.normal(0.0, self.jitter, size=x[:, :5].shape)
            x[:, :5] += noise.astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y)


def build_loaders(args):
    np.random.seed(args.seed)  # ok: MLS301
    train_ds = PVWindowDataset(args.train_csv, args.history, args.horizon, args.jitter, train=True)
    val_ds = PVWindowDataset(args.val_csv, args.history, args.horizon, 0.0, train=False,
                             stats=(train_ds.mean, train_ds.std))
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True,
                          num_workers=args.workers, drop_last=True, pin_memory=True)
    val_dl = DataLoader(val_ds, batch_size=args.batch_size, shuffle=False,
                        num_workers=args.workers)
    return train_dl, val_dl


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--train-csv", required=True)
    p.add_argument("--val-csv", required=True)
    p.add_argument("--history", type=int, default=96)
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--jitter", type=float, default=0.02)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=17)
    tr, va = build_loaders(p.parse_args())
    print(f"train batches={len(tr)} val batches={len(va)}")
