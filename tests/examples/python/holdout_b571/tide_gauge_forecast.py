# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""Sliding-window loaders for hourly tide-gauge sea-level forecasting (UHSLC fast-delivery CSVs)."""
import argparse
import random
import time

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class TideWindowDataset(Dataset):
    def __init__(self, csv_path, context=168, horizon=48, jitter=0.0, stats=None):
        df = pd.read_csv(csv_path, parse_dates=["time"]).set_index("time").sort_index()
        series = df["sea_level_mm"].interpolate(limit=6).to_numpy(dtype=np.float32)
        if stats is None:
            stats = (float(np.nanmean(series)), float(np.nanstd(series)))
        self.mean, self.std = stats
        self.series = (series - self.mean) / self.std
        self.context, self.horizon, self.jitter = context, horizon, jitter
        span = context + horizon
        bad = np.isnan(self.series).astype(np.int64)
        cum = np.concatenate([[0], np.cumsum(bad)])
        self.starts = np.nonzero(cum[span:] - cum[:-span] == 0)[0]

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, idx):
        s = int(self.starts[idx])
        x = self.series[s:s + self.context].copy()
        if self.jitter > 0:
            x += np.random.normal(0.0, self.jitter, size=x.shape).astype(np.float32)
        y = self.series[s + self.context:s + self.context + self.horizon].copy()
        return torch.from_numpy(x).unsqueeze(-1), torch.from_numpy(y)


def _worker_init(worker_id: int) -> None:
    np.random.seed((int(time.time() * 1000) + worker_id) % (2 ** 32))  # ruleid: MLS301


def make_loaders(args):
    seed_everything(args.seed)
    train = TideWindowDataset(args.train_csv, args.context, args.horizon, jitter=args.jitter)
    val = TideWindowDataset(args.val_csv, args.context, args.horizon, stats=(train.mean, train.std))
    train_dl = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                          worker_init_fn=_worker_init, drop_last=True, pin_memory=True)
    val_dl = DataLoader(val, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    return train_dl, val_dl


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--train-csv", required=True)
    p.add_argument("--val-csv", required=True)
    p.add_argument("--context", type=int, default=168)
    p.add_argument("--horizon", type=int, default=48)
    p.add_argument("--jitter", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=1234)
    tr, va = make_loaders(p.parse_args())
    print(f"train batches={len(tr)} val batches={len(va)}")
