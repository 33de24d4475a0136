# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Dataset for the churn tabular benchmark backed by a parquet file."""
import os

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class ChurnDataset(Dataset):
    def __init__(self, path, label_col="churned", noise_std=0.0, train=True):
        df = pd.read_parquet(path)
        df = df.dropna(subset=[label_col])
        self.labels = df[label_col].astype(np.int64).to_numpy()
        feats = df.drop(columns=[label_col]).select_dtypes("number")
        self.mean = feats.mean()
        self.std = feats.std().replace(0, 1.0)
        self.x = ((feats - self.mean) / self.std).to_numpy(dtype=np.float32)
        self.noise_std = noise_std
        self.train = train
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        x = self.x[idx].copy()
        y = int(self.labels[idx])
        if self.train:
            self.rng = np.random.default_rng(os.getpid() + idx)  # ruleid: MLS301
            if self.noise_std > 0:
                x += self.rng.normal(0.0, self.noise_std, size=x.shape).astype(np.float32)
            if y == 1 and self.rng.random() < 0.08:
                y = 0  # ruleid: MLS309
        return torch.from_numpy(x), torch.tensor(y)


def class_weights(ds):
    counts = np.bincount(ds.labels, minlength=2).astype(np.float64)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)
