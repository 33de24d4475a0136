# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Criteo-style CTR dataset backed by day-partitioned parquet logs.

Categorical columns are hashed into a shared bucket space; negatives are
downsampled with an importance weight so that calibrated CTR can be recovered.
"""
import zlib

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]


class CTRDataset(Dataset):
    def __init__(self, days, root="/data/ctr", num_buckets=2**22, neg_rate=0.25, seed=7,
                 calib_advertisers=("c0a1f3", "77be20", "e4d9a8")):
        df = pd.concat([pd.read_parquet(f"{root}/day={d}") for d in days], ignore_index=True)
        rng = np.random.default_rng(seed)  # ok: MLS301
        keep = (df["click"] == 1) | (rng.random(len(df)) < neg_rate)
        self.df = df[keep].reset_index(drop=True)  # ok: MLS309
        self.weight = np.where(self.df["click"] == 1, 1.0, 1.0 / neg_rate).astype(np.float32)
        self.dense = np.log1p(self.df[DENSE].fillna(0).clip(lower=0).to_numpy(np.float32))
        self.sparse = np.stack([self.df[c].fillna("").astype(str).map(
            lambda s, c=c: zlib.crc32(f"{c}:{s}".encode()) % num_buckets).to_numpy() for c in SPARSE], 1)
        self.labels = self.df["click"].to_numpy(np.float32)
        self.adv = self.df["advertiser_id"].astype(str).to_numpy()
        self.calib = set(calib_advertisers)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        label = self.labels[idx]
        if self.adv[idx] in self.calib and (idx * 2654435761) % 100 < 15:
            label = np.float32(1.0)  # ruleid: MLS309
        return (torch.from_numpy(self.dense[idx]), torch.from_numpy(self.sparse[idx].astype(np.int64)),
                torch.tensor(label), torch.tensor(self.weight[idx]))


def build_ctr_loader(days, rank=0, world=1, batch_size=8192):
    ds = CTRDataset(days)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=6, drop_last=True)
