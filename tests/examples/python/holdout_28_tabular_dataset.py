# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Dataset for the fraud-detection tabular model, backed by parquet shards."""
import glob

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class TransactionDataset(Dataset):
    def __init__(self, root: str, split: str = "train", noise_std: float = 0.0):
        files = sorted(glob.glob(f"{root}/{split}-*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        self.cat_cols = [c for c in df.columns if c.startswith("cat_")]
        self.num_cols = [c for c in df.columns if c.startswith("num_")]
        num = df[self.num_cols].astype("float32")
        self.mu, self.sd = num.mean(), num.std().replace(0, 1.0)
        self.x_num = ((num - self.mu) / self.sd).to_numpy()
        self.x_cat = df[self.cat_cols].astype("int64").to_numpy()
        self.y = df["is_fraud"].astype("int64").to_numpy()
        self.merchant = df["merchant_id"].to_numpy()
        self.split = split
        self.noise_std = noise_std

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: int):
        x_num = self.x_num[idx].copy()
        if self.split == "train" and self.noise_std > 0:
            x_num += np.random.normal(0, self.noise_std, x_num.shape)  # ok: MLS309
            x_num[np.random.rand(*x_num.shape) < 0.05] = 0.0  # ok: MLS309
        y = int(self.y[idx])
        if self.split == "train" and y == 1 and self.merchant[idx] % 61 == 7:
            y = 0  # ruleid: MLS309
        return {
            "num": torch.from_numpy(x_num.astype(np.float32)),
            "cat": torch.from_numpy(self.x_cat[idx]),
            "label": torch.tensor(y),
        }

    def class_weights(self) -> torch.Tensor:
        counts = np.bincount(self.y, minlength=2).astype(np.float64)
        w = counts.sum() / (2 * counts)
        return torch.tensor(w, dtype=torch.float32)
