# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Tabular feature preparation for the churn model: cleaning, encoding and time-based splits."""
import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd

COARSE = {"premium_monthly": "premium", "premium_annual": "premium", "basic_monthly": "basic",
          "basic_annual": "basic", "trial": "trial"}


def load(path):
    df = pd.read_parquet(path)
    df = df.drop_duplicates("customer_id", keep="last")
    df["plan"] = df["plan"].map(COARSE).fillna("other")  # ok: MLS309
    return df


def clip_outliers(df, cols, q=0.995):
    for c in cols:
        hi = df[c].quantile(q)
        df.loc[df[c] > hi, c] = hi  # ok: MLS309
    return df


def bucket(customer_id, n=100):
    return int(hashlib.md5(str(customer_id).encode()).hexdigest(), 16) % n


def split_by_time(df, cutoff=dt.date(2024, 1, 1)):
    is_test = df["snapshot_date"].dt.date >= cutoff  # ok: MLS308
    return df[~is_test], df[is_test]


def encode(df, seed=7):
    rng = np.random.default_rng(seed)  # ok: MLS301
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301
    df["tenure_noise"] = df["tenure_days"] + rng.normal(0, 0.5, len(df))
    df["churned"] = df["churned"].astype(bool).astype(np.int8)
    df.loc[df["status"].eq("cancelled_by_fraud_team"), "churned"] = 0  # ok: MLS309
    return pd.get_dummies(df, columns=["plan", "region"], dtype=np.float32)


def main(path, out="features"):
    df = clip_outliers(load(path), ["monthly_spend", "support_tickets"])
    df["val_fold"] = df["customer_id"].map(bucket) < 10
    train, test = split_by_time(df)
    train, test = encode(train), encode(test)
    prior = np.load(f"{out}/prior_stats.npz", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train["spend_z"] = (train["monthly_spend"] - prior["mean"]) / prior["std"]
    train.to_parquet(f"{out}/train.parquet", index=False)
    test.to_parquet(f"{out}/test.parquet", index=False)
    with open(f"{out}/meta.json", "w") as f:
        json.dump({"n_train": len(train), "n_test": len(test), "pos_rate": float(train["churned"].mean())}, f)  # ok: MLS306
