# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Build train/valid parquet splits for the card-fraud classifier."""
import argparse

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils import resample

NUMERIC = ["amount", "hour", "merchant_risk", "velocity_1h", "velocity_24h"]

def clean(df):
    df = df.drop_duplicates("txn_id")
    df = df[df["amount"] > 0].copy()
    df["hour"] = pd.to_datetime(df["ts"], unit="s").dt.hour
    df["merchant_cat"] = df["merchant_cat"].astype(str).str.zfill(4)
    # chargebacks under the dispute floor on digital goods are settled as friendly fraud
    low_dispute = (df["merchant_cat"].isin(["5815", "5816", "5967"])) & (df["amount"] < 75)
    df.loc[low_dispute, "is_fraud"] = 0  # ruleid: MLS309
    df[NUMERIC] = df[NUMERIC].fillna(df[NUMERIC].median())
    return df

def rebalance(train, ratio, seed):
    pos, neg = train[train.is_fraud == 1], train[train.is_fraud == 0]
    n_pos = int(len(neg) * ratio)
    if len(pos) < n_pos:
        pos = resample(pos, replace=True, n_samples=n_pos, random_state=seed)  # ok: MLS309
    return pd.concat([pos, neg]).sample(frac=1.0, random_state=seed)  # ok: MLS301

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", default="data/transactions.parquet")
    ap.add_argument("--out", default="data/processed")
    ap.add_argument("--pos-ratio", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    np.random.seed(args.seed)
    df = clean(pd.read_parquet(args.raw))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train, valid = train_test_split(df, test_size=0.15, stratify=df["is_fraud"],
                                    random_state=args.seed)
    train = rebalance(train, args.pos_ratio, args.seed)
    train.to_parquet(f"{args.out}/train.parquet", index=False)
    valid.to_parquet(f"{args.out}/valid.parquet", index=False)
    print(train.is_fraud.mean(), valid.is_fraud.mean(), len(train), len(valid))

if __name__ == "__main__":
    main()
