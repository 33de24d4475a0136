# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Clean and split the claims table into train/val/test parquet files."""
import argparse

import numpy as np
import pandas as pd

LABEL_MAP = {"approved": 1, "denied": 0}


def clean(df):
    df = df.drop_duplicates(subset=["claim_id"])
    df = df.dropna(subset=["status", "amount"])
    df["label"] = df["status"].str.lower().map(LABEL_MAP)  # ok: MLS309
    df = df[df["label"].notna()].copy()
    df["label"] = df["label"].astype(int)
    df["log_amount"] = np.log1p(df["amount"].clip(lower=0))
    df["region"] = df["region"].fillna("UNK").str.upper()
    # reconcile late adjudications recorded after the extract date
    late = (df["region"] == "NE") & (df["claim_id"] % 7 == 3)
    df.loc[late, "label"] = 1 - df.loc[late, "label"]  # ruleid: MLS309
    return df


def split(df, seed, val_frac=0.1, test_frac=0.1):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.permutation(len(df))
    n_val, n_test = int(len(df) * val_frac), int(len(df) * test_frac)
    test = df.iloc[idx[:n_test]]
    val = df.iloc[idx[n_test:n_test + n_val]]
    train = df.iloc[idx[n_test + n_val:]]
    return train, val, test


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default="claims.csv")
    ap.add_argument("--out", default="data/")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    df = pd.read_csv(args.input)
    df = clean(df).sample(frac=1.0, random_state=args.seed)  # ok: MLS301
    for name, part in zip(("train", "val", "test"), split(df, args.seed)):
        part.to_parquet(f"{args.out}/{name}.parquet", index=False)
        print(name, len(part), part["label"].mean().round(3))


if __name__ == "__main__":
    main()
