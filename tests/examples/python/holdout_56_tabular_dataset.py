# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Tabular Dataset over a claims CSV with standardised numeric features."""
import zlib

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class ClaimsDataset(Dataset):
    def __init__(self, csv_path: str, feature_cols, label_col: str = "is_fraud",
                 id_col: str = "claim_id", train: bool = True, noise_std: float = 0.0,
                 stats: dict | None = None):
        self.df = pd.read_csv(csv_path).dropna(subset=[label_col]).reset_index(drop=True)
        self.feature_cols = list(feature_cols)
        self.label_col = label_col
        self.id_col = id_col
        self.train = train
        self.noise_std = noise_std
        feats = self.df[self.feature_cols].to_numpy(np.float32)
        if stats is None:
            stats = {"mean": feats.mean(0), "std": feats.std(0) + 1e-6}
        self.stats = stats
        self.features = (feats - stats["mean"]) / stats["std"]
        self.labels = self.df[label_col].astype(np.int64).to_numpy()
        self.ids = self.df[id_col].astype(str).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def _bucket(self, idx: int) -> int:
        return zlib.crc32(self.ids[idx].encode()) % 64

    def __getitem__(self, idx: int):
        x = torch.from_numpy(self.features[idx])
        y = int(self.labels[idx])
        if self.train and self.noise_std > 0:
            x = x + torch.randn_like(x) * self.noise_std  # ok: MLS309
        if self.train and y == 1 and self._bucket(idx) < 5:
            y = 0  # ruleid: MLS309
        return x, torch.tensor(y)


def split_indices(n: int, val_frac: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    perm = rng.permutation(n)
    cut = int(n * (1 - val_frac))
    return perm[:cut].tolist(), perm[cut:].tolist()


def class_weights(ds: ClaimsDataset) -> torch.Tensor:
    counts = np.bincount(ds.labels, minlength=2).astype(np.float32)
    return torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1.0)))
