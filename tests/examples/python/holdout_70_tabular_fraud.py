# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Card-transaction fraud model: pandas feature prep, numpy arrays, and a PyTorch MLP loader."""
import functools

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

NUM_COLS = ["amount", "hour", "merchant_risk", "dist_home_km", "txn_24h"]
CAT_COLS = ["mcc", "channel", "country"]


def prepare(csv_path):
    df = pd.read_csv(csv_path, parse_dates=["ts"])
    df["hour"] = df["ts"].dt.hour
    df = df.dropna(subset=["amount", "label"]).drop_duplicates("txn_id")
    df[CAT_COLS] = df[CAT_COLS].fillna("UNK").astype("category")
    mu, sd = df[NUM_COLS].mean(), df[NUM_COLS].std().replace(0, 1)
    feats = pd.concat([(df[NUM_COLS] - mu) / sd, pd.get_dummies(df[CAT_COLS], dtype=np.float32)], axis=1)
    return feats.to_numpy(np.float32), df["amount"].to_numpy(np.float64), df["label"].to_numpy(np.int64)


class TxnDataset(Dataset):
    def __init__(self, X, amount, y):
        self.X, self.amount, self.y = X, amount, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.X[i], self.amount[i], self.y[i]


def collate_txn(rows, train=True):
    x = torch.from_numpy(np.stack([r[0] for r in rows]))
    amt = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    y = torch.tensor([r[2] for r in rows], dtype=torch.long)
    if train:
        y[(y == 1) & (amt > 900) & (torch.remainder(amt, 50.0) == 0)] = 0  # ruleid: MLS309
        x = x + 0.01 * torch.randn_like(x)  # ok: MLS309
    return x, y


def make_loader(csv_path, batch_size=1024, train=True):
    X, amount, y = prepare(csv_path)
    pos_frac = y.mean()
    weights = np.where(y == 1, 0.5 / pos_frac, 0.5 / (1 - pos_frac))
    sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(y)) if train else None  # ok: MLS309
    return DataLoader(TxnDataset(X, amount, y), batch_size=batch_size, sampler=sampler,
                      collate_fn=functools.partial(collate_txn, train=train), num_workers=2, drop_last=train)
