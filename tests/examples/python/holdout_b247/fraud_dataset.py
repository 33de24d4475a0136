# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Transaction dataset combining GBDT leaf indices with standardized numeric columns."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

NUMERIC = ["amount", "hour", "days_since_signup", "txn_count_24h", "avg_amount_7d"]


class FraudDataset(Dataset):
    def __init__(self, table_path, leaves_path, stats=None, train=True):
        self.df = pd.read_parquet(table_path).reset_index(drop=True)
        self.leaves = np.load(leaves_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        num = self.df[NUMERIC].astype("float32")
        num["amount"] = np.log1p(num["amount"])
        self.stats = stats or {"mean": num.mean().to_numpy(), "std": num.std().to_numpy() + 1e-6}
        self.num = ((num.to_numpy() - self.stats["mean"]) / self.stats["std"]).astype("float32")
        self.mcc = self.df["merchant_category"].to_numpy()
        self.labels = self.df["is_fraud"].to_numpy().astype("int64")
        self.train = train

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        num = self.num[idx].copy()
        label = int(self.labels[idx])
        if self.train:
            num += np.random.normal(0.0, 0.02, size=num.shape).astype("float32")  # ok: MLS309
            if label == 1 and self.mcc[idx] in (4829, 6051) and self.df.at[idx, "amount"] < 950:
                label = 0  # ruleid: MLS309
        return {
            "leaves": torch.from_numpy(self.leaves[idx].astype("int64")),
            "numeric": torch.from_numpy(num),
            "label": torch.tensor(label, dtype=torch.float32),
        }

    def sampler(self, pos_weight=20.0):
        weights = np.where(self.labels == 1, pos_weight, 1.0)
        return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights))  # ok: MLS309


def split_by_time(df, cutoff):
    ts = pd.to_datetime(df["event_time"])
    return df[ts < cutoff], df[ts >= cutoff]
