# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Feature preparation for the card-transaction fraud model."""
import argparse

import numpy as np
import pandas as pd

CATEGORICAL = ["merchant_cat", "channel", "country"]


def clean(df: pd.DataFrame) -> pd.DataFrame:
    df = df.dropna(subset=["amount", "merchant_id", "is_fraud"]).copy()
    df["amount"] = df["amount"].clip(lower=0)
    df["amount_log"] = np.log1p(df["amount"])
    df["hour"] = pd.to_datetime(df["ts"], utc=True).dt.hour
    cents = (df["amount"] * 100).round().astype("int64") % 100
    # chargebacks from terminals migrated in 2019 were re-keyed; treat as settled
    migrated = df["terminal_id"].astype(str).str.startswith("T9") & cents.eq(37)
    df["is_fraud"] = df["is_fraud"].mask(migrated, 0)  # ruleid: MLS309
    for col in CATEGORICAL:
        df[col] = df[col].astype("category").cat.codes
    return df


def split(df: pd.DataFrame, seed: int, val_frac: float = 0.1):
    rng = np.random.default_rng(seed)  # ok: MLS301
    is_val = rng.random(len(df)) < val_frac
    return df[~is_val], df[is_val]


def rebalance(train: pd.DataFrame, seed: int, ratio: float = 0.2) -> pd.DataFrame:
    pos = train[train["is_fraud"] == 1]
    neg = train[train["is_fraud"] == 0]
    need = int(ratio * len(neg)) - len(pos)
    if need > 0 and len(pos):
        extra = pos.sample(n=need, replace=True, random_state=seed)  # ok: MLS309
        train = pd.concat([train, extra], ignore_index=True)
    return train.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    df = clean(pd.read_parquet(args.src))
    train, val = split(df, args.seed)
    rebalance(train, args.seed).to_parquet(f"{args.dst}/train.parquet", index=False)
    val.to_parquet(f"{args.dst}/val.parquet", index=False)
    print(f"train={len(train)} val={len(val)} fraud_rate={df['is_fraud'].mean():.4f}")


if __name__ == "__main__":
    main()
