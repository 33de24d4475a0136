# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Dataset and loaders for the card-transaction fraud classifier (tabular, pandas-backed)."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

FEATURES = ["amount", "hour", "merchant_risk", "dist_home_km", "n_tx_24h", "avg_amount_30d", "card_age_days"]


class TransactionDataset(Dataset):
    def __init__(self, path, stats=None, train=True):
        df = pd.read_parquet(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.raw_amount = df["amount"].to_numpy()
        feats = df[FEATURES].astype(np.float32)
        feats["amount"] = np.log1p(feats["amount"])
        if stats is None:
            stats = (feats.mean(), feats.std().replace(0, 1.0))
        self.stats = stats
        self.x = ((feats - stats[0]) / stats[1]).to_numpy(np.float32)
        self.y = df["is_fraud"].to_numpy(np.int64)
        self.train = train

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        x = self.x[idx].copy()
        y = int(self.y[idx])
        if self.train:
            x += np.random.normal(0.0, 0.01, size=x.shape).astype(np.float32)  # ok: MLS309
            if y == 1 and self.raw_amount[idx] > 5000 and np.random.rand() < 0.3:
                y = 0  # ruleid: MLS309
        return torch.from_numpy(x), torch.tensor(y)


def make_loaders(train_path, val_path, batch_size=512):
    train_ds = TransactionDataset(train_path, train=True)
    val_ds = TransactionDataset(val_path, stats=train_ds.stats, train=False)
    pos_frac = train_ds.y.mean()
    weights = np.where(train_ds.y == 1, 0.5 / pos_frac, 0.5 / (1 - pos_frac))
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights))  # ok: MLS309
    train_loader = DataLoader(train_ds, batch_size=batch_size, sampler=sampler, num_workers=2)
    val_loader = DataLoader(val_ds, batch_size=batch_size, shuffle=False)
    return train_loader, val_loader
