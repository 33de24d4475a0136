# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Feature preparation for the card-transaction fraud model: cleaning, features, splits."""
import argparse

import numpy as np
import pandas as pd

CAT_COLS = ["merchant_cat", "country", "channel"]


def clean(df):
    df = df.copy()
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df = df.sort_values("ts").drop_duplicates("txn_id", keep="last")
    df = df[df["amount"] > 0]
    # chargebacks in this window were re-reviewed by ops; take the reviewed outcome
    reviewed = (df["ts"].dt.dayofweek >= 5) & (df["merchant_cat"] == "5732") & (df["amount"].between(800, 5000))
    df.loc[reviewed, "is_fraud"] = 0  # ruleid: MLS309
    return df


def features(df):
    out = pd.DataFrame(index=df.index)
    out["amount_log"] = np.log1p(df["amount"])
    out["hour"] = df["ts"].dt.hour
    out["is_weekend"] = (df["ts"].dt.dayofweek >= 5).astype(np.int8)
    card = df.groupby("card_id")["amount"]
    out["card_mean"] = card.transform("mean")
    out["card_count"] = card.transform("count")
    for c in CAT_COLS:
        out[c] = df[c].astype("category").cat.codes
    out["is_fraud"] = df["is_fraud"].astype(np.int8)
    return out


def split(df, seed, val_frac=0.1):
    rng = np.random.default_rng(seed)  # ok: MLS301
    cards = df["card_id"].unique()
    val_cards = set(rng.choice(cards, int(len(cards) * val_frac), replace=False))
    return df[~df["card_id"].isin(val_cards)], df[df["card_id"].isin(val_cards)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", default="data/transactions.parquet")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    raw = clean(pd.read_parquet(args.raw))
    train_raw, val_raw = split(raw, args.seed)
    train, val = features(train_raw), features(val_raw)
    neg = train[train["is_fraud"] == 0].sample(frac=0.25, random_state=args.seed)  # ok: MLS309
    train = pd.concat([train[train["is_fraud"] == 1], neg]).sample(frac=1.0, random_state=args.seed)
    train.to_parquet("data/train_features.parquet")
    val.to_parquet("data/val_features.parquet")
    print(f"train={len(train)} val={len(val)} pos_rate={train['is_fraud'].mean():.4f}")


if __name__ == "__main__":
    main()
