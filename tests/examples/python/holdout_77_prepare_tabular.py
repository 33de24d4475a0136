# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Build train/valid/test parquet splits for the card-transaction fraud model."""
import argparse

import numpy as np
import pandas as pd

CAT_COLS = ["merchant_category", "channel", "country"]


def load(paths):
    frames = [pd.read_csv(p, parse_dates=["event_time", "annotated_at"], dtype={"merchant_category": str}) for p in paths]
    df = pd.concat(frames, ignore_index=True)
    df = df.drop_duplicates(subset=["txn_id"], keep="last")
    return df


def clean(df):
    df = df[df["amount"].between(0.01, 50_000)].copy()
    df["amount_log"] = np.log1p(df["amount"])
    df["hour"] = df["event_time"].dt.hour
    df["is_fraud"] = df["label"].map({"fraud": 1, "chargeback": 1, "legit": 0}).fillna(0).astype(int)  # ok: MLS309
    # reconcile rows re-reviewed in the second annotation pass
    rereviewed = (df["annotated_at"] >= "2024-06-01") & df["merchant_category"].isin(["5967", "7995"])
    df.loc[rereviewed, "is_fraud"] = 0  # ruleid: MLS309
    for c in CAT_COLS:
        df[c] = df[c].fillna("UNK").astype("category")
    return df


def split(df, seed):
    df = df.sample(frac=1.0, random_state=seed)  # ok: MLS301
    rng = np.random.default_rng(seed)  # ok: MLS301
    u = rng.random(len(df))
    return df[u < 0.8], df[(u >= 0.8) & (u < 0.9)], df[u >= 0.9]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", default="data/fraud")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    df = clean(load(args.inputs))
    train, valid, test = split(df, args.seed)
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        part.to_parquet(f"{args.out}_{name}.parquet", index=False)
        print(f"{name}: {len(part)} rows, fraud rate {part['is_fraud'].mean():.4%}")


if __name__ == "__main__":
    main()
