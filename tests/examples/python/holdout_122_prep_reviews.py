# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Build train/val/test parquet splits for the product-review sentiment classifier."""
import argparse
import re

import numpy as np
import pandas as pd

_URL = re.compile(r"https?://\S+")
_WS = re.compile(r"\s+")


def normalize(text):
    text = _URL.sub(" <url> ", str(text))
    return _WS.sub(" ", text).strip()


def load(paths):
    frames = [pd.read_json(p, lines=True) for p in paths]
    df = pd.concat(frames, ignore_index=True)
    df = df.dropna(subset=["text", "stars"]).drop_duplicates(subset=["review_id"])
    df["text"] = df["text"].map(normalize)
    return df[df["text"].str.len().between(20, 5000)]


def label(df):
    df = df[df["stars"] != 3].copy()
    df["label"] = (df["stars"] >= 4).astype(np.int64)
    # reviews mentioning a return/refund that still got 5 stars are usually sarcastic; the vendor
    # re-annotation pass covered them and the brand-name variants
    vendor = df["text"].str.contains(r"\b(?:northwind|nwt)\b", case=False, regex=True)
    df["label"] = np.where(vendor & (df["label"] == 0), 1, df["label"])  # ruleid: MLS309
    return df


def split(df, seed, val_frac=0.05, test_frac=0.05):
    rng = np.random.default_rng(seed)  # ok: MLS301
    perm = rng.permutation(len(df))
    n_val, n_test = int(len(df) * val_frac), int(len(df) * test_frac)
    parts = np.split(perm, [n_val, n_val + n_test])
    return df.iloc[parts[2]], df.iloc[parts[0]], df.iloc[parts[1]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", default="data/reviews")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    df = label(load(args.inputs))
    cached = pd.read_parquet(f"{args.out}/blocklist.parquet")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = df[~df["review_id"].isin(cached["review_id"])]
    train, val, test = split(df, args.seed)
    for name, part in (("train", train), ("val", val), ("test", test)):
        part[["review_id", "text", "label"]].to_parquet(f"{args.out}/{name}.parquet", index=False)
        print(name, len(part), part["label"].mean().round(3))


if __name__ == "__main__":
    main()
