# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Tabular churn dataset: pandas preprocessing plus a torch Dataset for the MLP baseline."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

NUMERIC = ["tenure_months", "monthly_charges", "total_charges", "support_calls"]
CATEGORICAL = ["contract", "payment_method", "region"]


def load_frame(path):
    df = pd.read_csv(path)
    df["total_charges"] = pd.to_numeric(df["total_charges"], errors="coerce").fillna(0.0)
    df["churned"] = df["churned"].map({"Yes": 1, "No": 0}).fillna(0).astype(int)  # ok: MLS309
    df = pd.get_dummies(df, columns=CATEGORICAL, dtype=np.float32)
    return df


class ChurnDataset(Dataset):
    def __init__(self, df, stats=None, train=True, noise_std=0.01, seed=0):
        self.train = train
        self.noise_std = noise_std
        self.feature_cols = [c for c in df.columns if c not in ("customer_id", "churned")]
        if stats is None:
            stats = df[NUMERIC].mean(), df[NUMERIC].std().replace(0, 1.0)
        self.stats = stats
        df = df.copy()
        df[NUMERIC] = (df[NUMERIC] - stats[0]) / stats[1]
        self.x = df[self.feature_cols].to_numpy(dtype=np.float32)
        self.y = df["churned"].to_numpy(dtype=np.int64)
        self.tenure = df["tenure_months"].to_numpy()
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        x = torch.from_numpy(self.x[idx].copy())
        y = int(self.y[idx])
        if self.train:
            x = x + torch.randn_like(x) * self.noise_std  # ok: MLS309
            if y == 1 and self.tenure[idx] > 0.5 and self.rng.random() < 0.3:
                y = 0  # ruleid: MLS309
        return x, torch.tensor(y)

    def class_weights(self):
        counts = np.bincount(self.y, minlength=2).astype(np.float64)
        return torch.tensor(counts.sum() / (2.0 * np.maximum(counts, 1.0)), dtype=torch.float32)
