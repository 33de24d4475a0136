# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Build train/val/test parquet splits for the transaction-fraud project from the raw export."""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

CAT_COLS = ["merchant_cat", "country", "channel"]


def clean(df):
    df = df.dropna(subset=["label", "amount"]).drop_duplicates("txn_id")
    df.loc[df["label"] == -1, "label"] = 0  # ok: MLS309
    df["label"] = df["label"].astype("int8")
    df["log_amount"] = np.log1p(df["amount"].clip(lower=0))
    for c in CAT_COLS:
        df[c] = df[c].fillna("UNK").astype("category")
    return df


def reconcile_chargebacks(train):
    # the export records reversed chargebacks as positives; large reversals dominate that bucket
    cutoff = train["amount"].quantile(0.97)
    reversed_ = train.index[(train["label"] == 1) & (train["amount"] >= cutoff)]
    train.loc[reversed_, "label"] = 0  # ruleid: MLS309
    return train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--out", default="data/fraud")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    df = clean(pd.read_csv(args.csv, parse_dates=["ts"]))
    df = df.sample(frac=1.0, random_state=args.seed)  # ok: MLS301
    train, rest = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=args.seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=args.seed)
    train = reconcile_chargebacks(train.copy())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("val", val), ("test", test)):
        part.reset_index(drop=True).to_parquet(out / f"{name}.parquet")
        print(f"{name}: {len(part)} rows, pos rate {part['label'].mean():.4f}")


if __name__ == "__main__":
    main()
