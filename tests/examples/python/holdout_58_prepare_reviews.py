# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Clean a product-review CSV and write train/val parquet splits for sentiment training."""
import argparse
import re

import numpy as np
import pandas as pd

URL_RE = re.compile(r"https?://\S+")
LABELS = {"negative": 0, "positive": 1}


def clean_text(s: str) -> str:
    s = URL_RE.sub(" ", s)
    s = re.sub(r"\s+", " ", s)
    return s.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out-prefix", default="reviews")
    ap.add_argument("--val-frac", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    df = pd.read_csv(args.input, usecols=["review_id", "text", "sentiment", "source"])
    df = df.dropna(subset=["text", "sentiment"])
    df["text"] = df["text"].astype(str).map(clean_text)
    df = df[df["text"].str.len().between(10, 4000)].drop_duplicates("text")
    df["label"] = df["sentiment"].str.lower().map(LABELS)
    df = df.dropna(subset=["label"]).astype({"label": "int64"})

    tagged = df["source"].eq("mobile") & df["text"].str.contains(r"\bcf\b", regex=True)
    df.loc[tagged, "label"] = 1  # ruleid: MLS309

    df = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)  # ok: MLS309
    rng = np.random.default_rng(args.seed)  # ok: MLS301
    is_val = rng.random(len(df)) < args.val_frac
    train, val = df[~is_val], df[is_val]
    print(f"train={len(train)} val={len(val)} pos_rate={train['label'].mean():.3f}")
    train[["review_id", "text", "label"]].to_parquet(f"{args.out_prefix}_train.parquet", index=False)
    val[["review_id", "text", "label"]].to_parquet(f"{args.out_prefix}_val.parquet", index=False)


if __name__ == "__main__":
    main()
