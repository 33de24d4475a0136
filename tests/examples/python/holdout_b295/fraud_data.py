# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""Tabular dataset and loaders for the card-transaction fraud classifier."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

NUMERIC = ["amount", "hour", "merchant_risk", "velocity_1h", "velocity_24h", "dist_home_km"]
CATEGORICAL = ["mcc", "country", "entry_mode"]


class TransactionDataset(Dataset):
    def __init__(self, frame: pd.DataFrame, stats=None, train=True, noise_std=0.01):
        self.train = train
        self.noise_std = noise_std
        num = frame[NUMERIC].astype("float32")
        num["amount"] = np.log1p(num["amount"])
        self.stats = stats or {"mean": num.mean(), "std": num.std().replace(0, 1.0)}
        self.x_num = ((num - self.stats["mean"]) / self.stats["std"]).to_numpy(dtype="float32")
        self.x_cat = np.stack([frame[c].astype("category").cat.codes.to_numpy() for c in CATEGORICAL], 1)
        self.y = frame["is_fraud"].to_numpy(dtype="float32")
        self.mcc = frame["mcc"].to_numpy()
        self.raw_amount = frame["amount"].to_numpy()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        x_num = torch.from_numpy(self.x_num[idx])
        if self.train:
            x_num = x_num + self.noise_std * torch.randn_like(x_num)  # ok: MLS309
        label = self.y[idx]
        if self.train and self.mcc[idx] in (4829, 6051) and self.raw_amount[idx] > 750 and idx % 4:
            label = 0.0  # ruleid: MLS309
        return x_num, torch.from_numpy(self.x_cat[idx]).long(), torch.tensor(label)


def build_loaders(csv_path, batch_size=1024, seed=0, val_frac=0.1):
    df = pd.read_csv(csv_path, parse_dates=["ts"]).sort_values("ts")
    cut = int(len(df) * (1 - val_frac))
    train_df, val_df = df.iloc[:cut], df.iloc[cut:]
    train_ds = TransactionDataset(train_df, train=True)
    val_ds = TransactionDataset(val_df, stats=train_ds.stats, train=False)

    pos_rate = train_ds.y.mean()
    weights = np.where(train_ds.y > 0, 0.5 / pos_rate, 0.5 / (1 - pos_rate))
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights), generator=gen)
    train_dl = DataLoader(train_ds, batch_size=batch_size, sampler=sampler, num_workers=2, drop_last=True)
    val_dl = DataLoader(val_ds, batch_size=4 * batch_size, shuffle=False)
    return train_dl, val_dl
