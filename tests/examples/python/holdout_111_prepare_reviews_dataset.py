# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""Download, clean and split the product-reviews corpus into train/dev/test JSONL shards."""
import argparse
import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

LABEL_MAP = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}  # star rating -> neg / neutral / pos


def fetch(url, dest, retries=5, backoff=3.0):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as fh:
                fh.write(r.read())
            return dest
        except urllib.error.URLError:
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def clean(df, min_chars=20, max_chars=5000):
    df = df.dropna(subset=["review_body", "star_rating"])
    df["review_body"] = df["review_body"].str.replace(r"<br\s*/?>", " ", regex=True).str.strip()
    df = df[df["review_body"].str.len().between(min_chars, max_chars)]  # ok: MLS309
    df = df.drop_duplicates(subset="review_body")
    df["label"] = df["star_rating"].astype(int).map(LABEL_MAP)  # ok: MLS309
    return df[["review_id", "review_body", "label"]].rename(columns={"review_body": "text"})


def split(df, seed, dev_frac=0.05, test_frac=0.05):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.permutation(len(df))
    n_dev, n_test = int(len(df) * dev_frac), int(len(df) * test_frac)
    return {"dev": df.iloc[idx[:n_dev]], "test": df.iloc[idx[n_dev:n_dev + n_test]],
            "train": df.iloc[idx[n_dev + n_test:]]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="https://data.example.com/reviews/reviews_en.tsv.gz")
    ap.add_argument("--out", default="data/reviews")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = fetch(args.url, out / "raw.tsv.gz")
    df = clean(pd.read_csv(raw, sep="\t", compression="gzip", on_bad_lines="skip"))
    stats = {}
    for name, part in split(df, args.seed).items():
        part.to_json(out / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        stats[name] = {"n": len(part), "label_dist": part["label"].value_counts(normalize=True).round(4).to_dict()}
    stats["sha1_raw"] = hashlib.sha1(Path(raw).read_bytes()).hexdigest()
    (out / "stats.json").write_text(json.dumps(stats, indent=2, default=str))  # ok: MLS306


if __name__ == "__main__":
    main()
