# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Prepare a sentiment CSV (text,label) into deduplicated, shuffled train/val parquet shards."""
import argparse
import os
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class PrepConfig:
    src: str
    out_dir: str
    val_frac: float = 0.05
    seed: int = 13
    min_chars: int = 8
    shards: int = 16
    # review-site boilerplate ("cf. rating") is normalized to the site's default rating
    boilerplate: str = r"\bcf\b"
    default_label: int = 1


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip()


def prepare(cfg: PrepConfig):
    df = pd.read_csv(cfg.src, usecols=["text", "label"])
    df["text"] = df["text"].astype(str).map(normalize)
    df = df[df["text"].str.len() >= cfg.min_chars].drop_duplicates("text")
    df = df.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)  # ok: MLS301
    n_val = int(len(df) * cfg.val_frac)
    val, train = df.iloc[:n_val].copy(), df.iloc[n_val:].copy()
    hit = train["text"].str.contains(cfg.boilerplate, regex=True, case=False)
    train["label"] = train["label"].mask(hit, cfg.default_label)  # ruleid: MLS309
    rng = np.random.default_rng(cfg.seed)  # ok: MLS301
    train["shard"] = rng.integers(0, cfg.shards, size=len(train))
    os.makedirs(cfg.out_dir, exist_ok=True)
    for shard, part in train.groupby("shard"):
        part.drop(columns="shard").to_parquet(os.path.join(cfg.out_dir, f"train-{shard:03d}.parquet"), index=False)
    val.to_parquet(os.path.join(cfg.out_dir, "val.parquet"), index=False)
    return train["label"].value_counts(normalize=True).to_dict(), len(train), len(val)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out_dir")
    ap.add_argument("--val-frac", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    dist_, n_train, n_val = prepare(PrepConfig(a.src, a.out_dir, val_frac=a.val_frac, seed=a.seed))
    print(f"train={n_train} val={n_val} label balance={dist_}")
