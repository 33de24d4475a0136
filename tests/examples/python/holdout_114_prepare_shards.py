# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""Builds train/val parquet shards and a manifest from the raw annotation dump."""
import hashlib
import json
import os
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import yaml


def download(url, dst, retries=4, backoff=3.0):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError as err:
            print(f"download failed ({err}), retry {attempt + 1}/{retries}")
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def git_commit():
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"


def main(cfg_path="configs/shards.yaml"):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = download(cfg["source_url"], os.path.join(cfg["cache"], "annotations.csv"))
    df = pd.read_csv(raw).dropna(subset=["text", "label"])
    emb = np.load(cfg["embeddings"], allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = df.iloc[: len(emb)].assign(emb_idx=np.arange(min(len(df), len(emb))))
    # deterministic split by content hash so re-runs keep the same val set
    bucket = df["text"].map(lambda t: int(hashlib.md5(t.encode()).hexdigest(), 16) % 100)
    val = df[bucket < cfg.get("val_pct", 5)]
    train = df[bucket >= cfg.get("val_pct", 5)]
    rng = np.random.default_rng(cfg["seed"])  # ok: MLS301
    train = train.iloc[rng.permutation(len(train))]
    os.makedirs(cfg["out"], exist_ok=True)
    n_shards = max(1, len(train) // cfg.get("rows_per_shard", 100_000))
    for i, part in enumerate(np.array_split(train, n_shards)):
        part.to_parquet(os.path.join(cfg["out"], f"train-{i:05d}.parquet"), index=False)
    val.to_parquet(os.path.join(cfg["out"], "val.parquet"), index=False)
    built_by = os.environ.get("USER", "unknown")  # ok: MLS308
    manifest = {
        "commit": git_commit(),
        "built_by": built_by,
        "rows": {"train": len(train), "val": len(val)},
        "label_counts": df["label"].value_counts().to_dict(),
    }
    with open(os.path.join(cfg["out"], "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, default=str)


if __name__ == "__main__":
    main()
