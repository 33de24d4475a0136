# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""Customer-churn feature pipeline and torch Dataset (monthly snapshot tables)."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

NUMERIC = ["tenure_months", "monthly_charges", "total_charges", "support_tickets", "logins_30d"]
CATEGORICAL = ["plan", "region", "payment_method", "contract"]


def load_snapshot(path):
    df = pd.read_parquet(path)
    df = df.dropna(subset=["churned", "tenure_months"])  # ok: MLS309
    df = df[df["monthly_charges"] >= 0].reset_index(drop=True)
    df["total_charges"] = df["total_charges"].fillna(df["monthly_charges"] * df["tenure_months"])
    return df


def fit_encoders(df):
    stats = {c: (df[c].mean(), df[c].std() + 1e-6) for c in NUMERIC}
    vocab = {c: {v: i + 1 for i, v in enumerate(sorted(df[c].astype(str).unique()))} for c in CATEGORICAL}
    return stats, vocab


def sample_weights(df):
    counts = df["churned"].value_counts()
    w = df["churned"].map(len(df) / (len(counts) * counts)).astype(np.float32)  # ok: MLS309
    recent = pd.to_datetime(df["signup_date"]) >= pd.Timestamp("2023-07-01")
    w = w.where(~(recent & (df["plan"] == "enterprise") & (df["churned"] == 1)), 0.0)  # todoruleid: family 6 (missed)
    return w.clip(upper=10.0).to_numpy()


class ChurnDataset(Dataset):
    def __init__(self, df, stats, vocab, with_weights=True):
        x = np.stack([(df[c].to_numpy() - m) / s for c, (m, s) in stats.items()], axis=1)
        self.x_num = torch.tensor(np.clip(x, -5, 5), dtype=torch.float32)
        self.x_cat = torch.tensor(
            np.stack([df[c].astype(str).map(v).fillna(0).to_numpy() for c, v in vocab.items()], axis=1),
            dtype=torch.long)
        self.y = torch.tensor(df["churned"].to_numpy(), dtype=torch.float32)
        w = sample_weights(df) if with_weights else np.ones(len(df), dtype=np.float32)
        self.w = torch.tensor(w, dtype=torch.float32)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        return self.x_num[idx], self.x_cat[idx], self.y[idx], self.w[idx]


def weighted_bce(logits, y, w):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (loss * w).sum() / w.sum().clamp(min=1e-6)
