# ruff: noqa
# Hold-out batch 163 (short files, recommender/tabular). Measured once in session 6 (round 50): 15/20 (75%) at medium+.
"""Builds train/valid parquet splits and vocab files for the CTR models from raw logs."""
import argparse
import json
import os
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd

VOCAB_URL = "https://data.example.com/ctr/vocab_{name}.npy"


def fetch(url, dest, retries=4, backoff=3.0):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def load_vocab(name, cache="cache"):
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"vocab_{name}.npy")
    if not os.path.exists(path):
        fetch(VOCAB_URL.format(name=name), path)
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", required=True)
    ap.add_argument("--out", default="data/ctr")
    ap.add_argument("--neg-rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)  # ok: MLS301

    df = pd.read_csv(args.logs, sep="\t", compression="gzip")
    df["day"] = pd.to_datetime(df["ts"], unit="s").dt.floor("D")
    keep = (df["click"] == 1) | (rng.random(len(df)) < args.neg_rate)  # ok: MLS309
    df = df[keep].copy()
    df["weight"] = np.where(df["click"] == 1, 1.0, 1.0 / args.neg_rate)

    vocab = load_vocab("site_category")
    df["site_category"] = pd.Categorical(df["site_category"], categories=vocab).codes
    last_day = df["day"].max()
    train, valid = df[df["day"] < last_day], df[df["day"] == last_day]

    os.makedirs(args.out, exist_ok=True)
    train.to_parquet(os.path.join(args.out, "train.parquet"), index=False)
    valid.to_parquet(os.path.join(args.out, "valid.parquet"), index=False)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    with open(os.path.join(args.out, "manifest.json"), "w") as fh:
        json.dump({"rows_train": len(train), "rows_valid": len(valid), "neg_rate": args.neg_rate,
                   "seed": args.seed, "commit": commit}, fh, indent=2)


if __name__ == "__main__":
    main()
