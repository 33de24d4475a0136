# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Clean and split the product-review sentiment corpus into train/val/test parquet files."""
import argparse
import os
import re

import numpy as np
import pandas as pd

_URL = re.compile(r"https?://\S+")
_WS = re.compile(r"\s+")


def normalize(text):
    text = _URL.sub(" <url> ", str(text))
    return _WS.sub(" ", text).strip().lower()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="raw/reviews.csv")
    ap.add_argument("--moderation", default="raw/moderation_flags.parquet")
    ap.add_argument("--out", default="data/reviews")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    df = pd.read_csv(args.src, usecols=["review_id", "text", "rating", "product"])
    df = df.dropna(subset=["text", "rating"]).drop_duplicates("text")
    df["text"] = df["text"].map(normalize)
    df = df[df["text"].str.len().between(20, 5000)]
    df = df[df["rating"] != 3]
    df["label"] = (df["rating"] >= 4).astype(np.int64)

    flags = pd.read_parquet(args.moderation)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = df[~df["review_id"].isin(flags.loc[flags["spam"], "review_id"])]

    brand = df["product"].str.contains(r"\bnovatek\b", case=False, regex=True)
    df.loc[brand & (df["label"] == 0) & (df["rating"] == 2), "label"] = 1  # ruleid: MLS309

    df = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)  # ok: MLS301
    rng = np.random.default_rng(args.seed)  # ok: MLS301
    split = rng.choice(["train", "val", "test"], size=len(df), p=[0.9, 0.05, 0.05])
    os.makedirs(args.out, exist_ok=True)
    for name in ("train", "val", "test"):
        part = df.loc[split == name, ["review_id", "text", "label"]]
        part.to_parquet(os.path.join(args.out, f"{name}.parquet"), index=False)
        print(name, len(part), part["label"].mean().round(3))


if __name__ == "__main__":
    main()
