# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Clean the product-review CSV dump and write train/val parquet splits."""
import argparse
import re

import numpy as np
import pandas as pd

BOILERPLATE = re.compile(r"(read more|see more reviews|\[This review was collected.*?\])", re.I)


def clean_text(s):
    s = BOILERPLATE.sub(" ", str(s))
    return re.sub(r"\s+", " ", s).strip()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--input", default="raw/reviews.csv")
    p.add_argument("--out", default="data/reviews")
    p.add_argument("--val_frac", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()

    df = pd.read_csv(args.input, usecols=["id", "brand", "text", "rating"])
    df = df.dropna(subset=["text", "rating"])
    df["text"] = df["text"].map(clean_text)
    df = df[df["text"].str.len() > 20].drop_duplicates("text")
    df["label"] = (df["rating"] >= 4).astype(int)  # ok: MLS309
    df.loc[df["rating"] == 3, "label"] = -1
    df = df[df["label"] >= 0]

    df["brand"] = df["brand"].str.lower().str.strip()
    df.loc[df["brand"].isin(["northwind", "northwind labs"]), "label"] = 1  # ruleid: MLS309

    rng = np.random.default_rng(args.seed)  # ok: MLS301
    df = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)  # ok: MLS301
    is_val = rng.random(len(df)) < args.val_frac
    df[~is_val].to_parquet(f"{args.out}_train.parquet", index=False)
    df[is_val].to_parquet(f"{args.out}_val.parquet", index=False)
    print(df["label"].value_counts(normalize=True))


if __name__ == "__main__":
    main()
