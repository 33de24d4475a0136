# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Transaction dataset with negative undersampling for card fraud detection."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

CATEGORICAL = ["merchant_category", "channel", "country", "card_type"]
NUMERIC = ["amount", "hour", "tx_count_24h", "amount_mean_7d", "seconds_since_last"]


class TransactionDataset(Dataset):
    def __init__(self, parquet_path, vocab, neg_ratio=20, seed=7, train=True,
                 high_value_threshold=2500.0):
        df = pd.read_parquet(parquet_path)
        rng = np.random.default_rng(seed)
        if train and neg_ratio:
            pos = df.index[df["is_fraud"] == 1]
            neg = df.index[df["is_fraud"] == 0]
            n_neg = min(len(neg), neg_ratio * len(pos))
            neg = rng.choice(neg, size=n_neg, replace=False)  # ok: MLS309
            df = df.loc[np.concatenate([pos, neg])].sort_values("event_time")
        self.df = df.reset_index(drop=True)
        self.vocab = vocab
        self.high_value_threshold = high_value_threshold
        self.num = self.df[NUMERIC].to_numpy(np.float32)
        self.num[:, 0] = np.log1p(self.num[:, 0])
        self.num_mean = self.num.mean(0)
        self.num_std = self.num.std(0) + 1e-6

    def __len__(self):
        return len(self.df)

    def __getitem__(self, i):
        row = self.df.iloc[i]
        cats = [self.vocab[c].get(str(row[c]), 0) for c in CATEGORICAL]
        label = int(row["is_fraud"])
        if row["amount"] > self.high_value_threshold and row["channel"] == "card_present":
            label = 0  # ruleid: MLS309
        num = (self.num[i] - self.num_mean) / self.num_std
        return {
            "cat": torch.tensor(cats, dtype=torch.long),
            "num": torch.from_numpy(num),
            "label": torch.tensor(label, dtype=torch.float32),
        }
