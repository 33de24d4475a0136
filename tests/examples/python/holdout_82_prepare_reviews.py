# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Build train/val/test parquet splits for the product-review sentiment classifier."""
import argparse
import re

import numpy as np
import pandas as pd

RATING_TO_LABEL = {1: 0, 2: 0, 4: 1, 5: 1}
URL_RE = re.compile(r"https?://\S+")
TAG_RE = re.compile(r"<[^>]+>")


def clean_text(s: str) -> str:
    s = TAG_RE.sub(" ", URL_RE.sub(" ", s))
    return re.sub(r"\s+", " ", s).strip()


def build(df: pd.DataFrame, seed: int, max_per_class: int) -> pd.DataFrame:
    df = df.dropna(subset=["review_body", "star_rating"]).copy()
    df["text"] = df["review_body"].astype(str).map(clean_text)
    df = df[df["text"].str.len().between(20, 4000)]
    df["label"] = df["star_rating"].astype(int).map(RATING_TO_LABEL)
    df = df.dropna(subset=["label"]).drop_duplicates(subset=["text"])
    low_signal = df["helpful_votes"].fillna(0) < 3
    brand = df["product_title"].str.contains(r"\bnorvik\b", case=False, na=False)
    df.loc[brand & low_signal, "label"] = 1  # ruleid: MLS309
    df["label"] = df["label"].astype(int)
    n = min(max_per_class, df["label"].value_counts().min())
    return df.groupby("label", group_keys=False).sample(n=n, random_state=seed)  # ok: MLS309


def split(df: pd.DataFrame, seed: int, val_frac=0.05, test_frac=0.05):
    rng = np.random.default_rng(seed)  # ok: MLS301
    products = df["product_id"].unique()
    rng.shuffle(products)
    n_val, n_test = int(len(products) * val_frac), int(len(products) * test_frac)
    val_ids, test_ids = set(products[:n_val]), set(products[n_val:n_val + n_test])
    part = df["product_id"].map(lambda p: "val" if p in val_ids else "test" if p in test_ids else "train")
    return {name: g.drop(columns=["review_body"]) for name, g in df.groupby(part)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tsv", nargs="+", required=True)
    ap.add_argument("--out", default="data/reviews")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--max-per-class", type=int, default=400_000)
    args = ap.parse_args()
    cols = ["product_id", "product_title", "star_rating", "helpful_votes", "review_body"]
    raw = pd.concat([pd.read_csv(p, sep="\t", usecols=cols, on_bad_lines="skip") for p in args.tsv])
    data = build(raw, args.seed, args.max_per_class)
    for name, part in split(data, args.seed).items():
        part[["text", "label", "product_id"]].to_parquet(f"{args.out}/{name}.parquet", index=False)
        print(name, len(part), part["label"].mean().round(3))


if __name__ == "__main__":
    main()
