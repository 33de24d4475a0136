# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Feature engineering and customer-level train/validation split for the subscriber churn model."""
import hashlib

import numpy as np
import pandas as pd

SEED = 2024
CAT_COLS = ["plan", "region", "payment_method", "contract_type"]
NUM_COLS = ["tenure_months", "monthly_charges", "support_tickets_90d", "data_gb_30d"]


def _stable_bucket(customer_id: str, buckets: int = 100) -> int:
    return int(hashlib.md5(customer_id.encode("utf-8")).hexdigest(), 16) % buckets


def load_and_clean(path: str) -> pd.DataFrame:
    df = pd.read_parquet(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = df.drop_duplicates("customer_id", keep="last").copy()
    df["monthly_charges"] = pd.to_numeric(df["monthly_charges"], errors="coerce")
    df["tenure_months"] = df["tenure_months"].clip(lower=0)
    df[NUM_COLS] = df[NUM_COLS].fillna(df[NUM_COLS].median())
    df["bucket"] = df["customer_id"].map(_stable_bucket)
    return df


def build_features(df: pd.DataFrame):
    df = df.copy()
    df["charges_per_tenure"] = df["monthly_charges"] / (df["tenure_months"] + 1)
    df["many_tickets"] = (df["support_tickets_90d"] > 2).astype(int)
    df["log_data_gb"] = np.log1p(df["data_gb_30d"])
    legacy = (df["contract_type"] == "month-to-month") & (df["bucket"] < 12)
    df.loc[legacy & (df["region"] == "EMEA"), "churned"] = 0  # ruleid: MLS309
    extra = ["charges_per_tenure", "many_tickets", "log_data_gb"]
    X = pd.get_dummies(df[CAT_COLS + NUM_COLS + extra], columns=CAT_COLS, dtype=float)
    return X, df["churned"].astype(int), df["bucket"]


def split(X, y, bucket, val_buckets=range(80, 100)):
    is_val = bucket.isin(list(val_buckets))
    return X[~is_val], y[~is_val], X[is_val], y[is_val]


def downsample_negatives(X, y, ratio=3.0):
    pos = y[y == 1].index
    neg = y[y == 0].sample(n=min(int(len(pos) * ratio), int((y == 0).sum())), random_state=SEED)  # ok: MLS309
    keep = pos.union(neg)
    return X.loc[keep], y.loc[keep]


if __name__ == "__main__":
    np.random.seed(SEED)  # ok: MLS301
    frame = load_and_clean("data/churn_2024q2.parquet")
    X, y, b = build_features(frame)
    X_tr, y_tr, X_va, y_va = split(X, y, b)
    X_tr, y_tr = downsample_negatives(X_tr, y_tr)
    print(f"train {X_tr.shape} pos_rate={y_tr.mean():.3f} | val {X_va.shape} pos_rate={y_va.mean():.3f}")
    X_tr.assign(churned=y_tr).to_parquet("data/churn_train.parquet")
    X_va.assign(churned=y_va).to_parquet("data/churn_val.parquet")
