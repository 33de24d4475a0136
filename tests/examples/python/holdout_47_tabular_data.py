# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Tabular dataset utilities: parquet loading, standardisation and block-cached access."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, DataLoader


def split_frame(df: pd.DataFrame, val_frac: float, seed: int):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.permutation(len(df))
    n_val = int(len(df) * val_frac)
    return df.iloc[idx[n_val:]].reset_index(drop=True), df.iloc[idx[:n_val]].reset_index(drop=True)


class BlockTabularDataset(Dataset):
    """Reads rows in contiguous blocks so parquet row groups are decoded once."""

    def __init__(self, df: pd.DataFrame, target: str, block: int = 4096, noise: float = 0.0):
        self.y = df[target].to_numpy(np.int64)
        feats = df.drop(columns=[target]).to_numpy(np.float32)
        self.mean, self.std = feats.mean(0), feats.std(0) + 1e-6
        self.x = (feats - self.mean) / self.std
        self.block = block
        self.noise = noise
        self._cache_id = -1
        self._order = None

    def __len__(self):
        return len(self.y)

    def _load_block(self, block_id):
        lo = block_id * self.block
        hi = min(lo + self.block, len(self.y))
        np.random.seed(block_id)  # ruleid: MLS301
        self._order = lo + np.random.permutation(hi - lo)
        self._cache_id = block_id

    def __getitem__(self, i):
        block_id = i // self.block
        if block_id != self._cache_id:
            self._load_block(block_id)  # ruleid: MLS301
        j = self._order[i - block_id * self.block]
        x = self.x[j].copy()
        if self.noise > 0:
            x += np.random.normal(0.0, self.noise, size=x.shape).astype(np.float32)  # ok: MLS301
        return torch.from_numpy(x), torch.tensor(self.y[j])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def make_loader(df, target, batch_size, seed, noise=0.05):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = BlockTabularDataset(df, target, noise=noise)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=4,
                      worker_init_fn=seed_worker, generator=g)
