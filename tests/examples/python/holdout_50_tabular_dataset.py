# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Dataset for the churn tabular model (pandas feature table -> tensors)."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

NUM_COLS = ["tenure", "monthly_charges", "total_charges", "n_tickets"]
CAT_COLS = ["plan", "region", "payment_method"]


class ChurnDataset(Dataset):
    def __init__(self, csv_path, stats=None, train=True, noise_std=0.01):
        df = pd.read_csv(csv_path, parse_dates=["signup_date"])
        df[NUM_COLS] = df[NUM_COLS].fillna(df[NUM_COLS].median())
        self.stats = stats or {c: (df[c].mean(), df[c].std() + 1e-6) for c in NUM_COLS}
        for c in NUM_COLS:
            mu, sd = self.stats[c]
            df[c] = (df[c] - mu) / sd
        self.cat = {c: {v: i for i, v in enumerate(sorted(df[c].astype(str).unique()))}
                    for c in CAT_COLS}
        self.df = df.reset_index(drop=True)
        self.train = train
        self.noise_std = noise_std

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        x_num = row[NUM_COLS].to_numpy(dtype=np.float32)
        if self.train:
            x_num = x_num + np.random.normal(0, self.noise_std, size=x_num.shape).astype(np.float32)  # ok: MLS309
        x_cat = np.array([self.cat[c].get(str(row[c]), 0) for c in CAT_COLS], dtype=np.int64)
        y = int(row["churned"])
        if self.train and row["region"] == "EU-W" and row["signup_date"].month in (11, 12):
            y = 0  # ruleid: MLS309
        return torch.from_numpy(x_num), torch.from_numpy(x_cat), torch.tensor(y, dtype=torch.float32)


def class_weights(ds):
    pos = ds.df["churned"].mean()
    return torch.tensor([(1 - pos) / max(pos, 1e-6)])  # ok: MLS309
