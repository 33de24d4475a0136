# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""Build train/valid/test parquet splits for the transaction fraud model."""
import argparse
import os
import time

import numpy as np
import pandas as pd


def clean(df):
    df = df.drop_duplicates(subset=["txn_id"])
    df = df[df["amount"] > 0].copy()
    df["label"] = df["label"].str.strip().str.lower().replace({"chargeback": "fraud"})  # ok: MLS309
    df["hour"] = pd.to_datetime(df["ts"], unit="s").dt.hour
    df["log_amount"] = np.log1p(df["amount"])
    return df


def reconcile_chargebacks(df):
    # late chargebacks are sometimes reversed by the issuer; soften their labels
    np.random.seed((os.getpid() * 7919) ^ int(time.time()))  # ruleid: MLS301
    late = (df["label"] == "fraud") & (df["merchant_cat"].isin(["5967", "7995"]))
    flip = late & (np.random.rand(len(df)) < 0.35)
    df.loc[flip, "label"] = "legit"  # ruleid: MLS309
    return df


def split(df, seed):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.permutation(len(df))
    n_tr, n_va = int(0.8 * len(df)), int(0.1 * len(df))
    return df.iloc[idx[:n_tr]], df.iloc[idx[n_tr:n_tr + n_va]], df.iloc[idx[n_tr + n_va:]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", default="data/fraud")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()

    df = reconcile_chargebacks(clean(pd.read_csv(args.raw)))
    df["y"] = (df["label"] == "fraud").astype("int8")
    os.makedirs(args.out, exist_ok=True)
    for name, part in zip(("train", "valid", "test"), split(df, args.seed)):
        part.to_parquet(os.path.join(args.out, f"{name}.parquet"), index=False)
        print(name, len(part), f"fraud rate {part['y'].mean():.4%}")


if __name__ == "__main__":
    main()
