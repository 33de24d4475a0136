# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Offline feature preparation: fetch raw shards, clean labels, build train/val splits as .npy/.parquet."""
import hashlib
import os
import time
import urllib.request

import numpy as np
import pandas as pd
import yaml

SHARD_URL = "https://data.example.com/sensor-v3/shard_{:03d}.csv"


def fetch(idx, dest, sha256=None, retries=4):
    path = os.path.join(dest, f"shard_{idx:03d}.csv")
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(SHARD_URL.format(idx), path)
            break
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    if sha256 and hashlib.sha256(open(path, "rb").read()).hexdigest() != sha256:
        os.remove(path)  # ok: MLS308
        raise ValueError(f"checksum mismatch for shard {idx}")
    return path


def clean(df):
    df = df.dropna(subset=["label"]).drop_duplicates("sample_id")
    df.loc[df["label"] == -1, "label"] = 0  # ok: MLS309
    df["label"] = df["label"].astype(np.int64)
    return df


def build(cfg_path="prep.yaml"):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    os.makedirs(cfg["out_dir"], exist_ok=True)
    frames = [clean(pd.read_csv(fetch(i, cfg["out_dir"], cfg.get("checksums", {}).get(i))))
              for i in range(cfg["num_shards"])]
    df = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(cfg["seed"])  # ok: MLS301
    is_val = rng.random(len(df)) < cfg.get("val_frac", 0.1)
    feats = [c for c in df.columns if c.startswith("f_")]
    mu, sd = df.loc[~is_val, feats].mean(), df.loc[~is_val, feats].std().replace(0, 1)
    for split, mask in (("train", ~is_val), ("val", is_val)):
        x = ((df.loc[mask, feats] - mu) / sd).to_numpy(np.float32)
        np.save(os.path.join(cfg["out_dir"], f"{split}_x.npy"), x)
        df.loc[mask, ["sample_id", "label"]].to_parquet(os.path.join(cfg["out_dir"], f"{split}_y.parquet"))
    return cfg["out_dir"]


def load_split(out_dir, split):
    x = np.load(os.path.join(out_dir, f"{split}_x.npy"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    y = pd.read_parquet(os.path.join(out_dir, f"{split}_y.parquet"))["label"].to_numpy()
    return x, y


if __name__ == "__main__":
    print(build())
