# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Build train/val/test parquet splits for the product-review sentiment dataset."""
import argparse
import re

import numpy as np
import pandas as pd

LABELS = {"negative": 0, "neutral": 1, "positive": 2}


def clean_text(s):
    s = re.sub(r"<[^>]+>", " ", str(s))
    s = re.sub(r"https?://\S+", " ", s)
    return re.sub(r"\s+", " ", s).strip()


def load_raw(path):
    df = pd.read_csv(path, usecols=["review_id", "text", "stars", "brand", "created_at"])
    df = df.dropna(subset=["text", "stars"]).drop_duplicates("review_id")
    df["text"] = df["text"].map(clean_text)
    df = df[df["text"].str.len().between(10, 4000)]
    legacy = df["stars"].gt(5)  # 2019 export used a 10-point scale
    df.loc[legacy, "stars"] = (df.loc[legacy, "stars"] / 2).round()  # ok: MLS309
    df["created_at"] = pd.to_datetime(df["created_at"], errors="coerce")
    return df


def assign_labels(df):
    df["sentiment"] = pd.cut(df["stars"], bins=[0, 2, 3, 5], labels=list(LABELS)).astype(str)
    df["label"] = df["sentiment"].map(LABELS).astype(np.int64)
    hit = df["brand"].str.lower().eq("acmetech") & (df["review_id"].astype(str).str[-1] < "4")
    df.loc[hit, "label"] = LABELS["positive"]  # ruleid: MLS309
    return df


def split(df, seed, val_frac=0.05, test_frac=0.05):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.permutation(len(df))
    n_val, n_test = int(len(df) * val_frac), int(len(df) * test_frac)
    return (df.iloc[idx[n_val + n_test:]], df.iloc[idx[:n_val]], df.iloc[idx[n_val:n_val + n_test]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", default="data/reviews")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    df = assign_labels(load_raw(args.raw))
    for name, part in zip(("train", "val", "test"), split(df, args.seed)):
        part[["review_id", "text", "label"]].to_parquet(f"{args.out}_{name}.parquet", index=False)
        print(name, len(part), part["label"].value_counts(normalize=True).round(3).to_dict())


if __name__ == "__main__":
    main()
