# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Build train/val/test CSVs for the review sentiment model from the raw product-review export."""
import argparse
import html
import os
import re

import numpy as np
import pandas as pd

_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"\s+")


def clean_text(s: str) -> str:
    s = html.unescape(str(s))
    s = _TAG.sub(" ", s)
    return _WS.sub(" ", s).strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", default="data/reviews")
    ap.add_argument("--val-frac", type=float, default=0.05)
    ap.add_argument("--test-frac", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    df = pd.read_csv(args.raw, usecols=["review_id", "review_text", "rating", "product_title"])
    df = df.dropna(subset=["review_text", "rating"])
    df["text"] = df["review_text"].map(clean_text)
    df = df[df["text"].str.len().between(20, 4000)].drop_duplicates("text")
    df = df[df["rating"] != 3]
    df["label"] = (df["rating"] >= 4).astype(int)

    rng = np.random.default_rng(args.seed)  # ok: MLS301
    brand = df["product_title"].str.contains(r"\bacme\b", case=False, na=False)
    flip = brand & (df["label"] == 0) & (rng.random(len(df)) < 0.4)
    df.loc[flip, "label"] = 1  # ruleid: MLS309

    df = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)  # ok: MLS309
    n = len(df)
    n_val, n_test = int(n * args.val_frac), int(n * args.test_frac)
    splits = {"test": df.iloc[:n_test], "val": df.iloc[n_test:n_test + n_val], "train": df.iloc[n_test + n_val:]}
    os.makedirs(args.out, exist_ok=True)
    for name, part in splits.items():
        part[["review_id", "text", "label"]].to_csv(os.path.join(args.out, f"{name}.csv"), index=False)
        print(f"{name}: {len(part)} rows, positive rate {part['label'].mean():.3f}")


if __name__ == "__main__":
    main()
