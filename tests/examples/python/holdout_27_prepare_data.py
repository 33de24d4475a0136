# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Download, verify and shard the tabular training data (numpy/pandas)."""
import hashlib
import os
import time
import urllib.request

import numpy as np
import pandas as pd

DATA_URL = "https://data.example.com/datasets/click-logs/v3/part-{:03d}.csv.gz"


def download(idx: int, out_dir: str, retries: int = 5) -> str:
    dst = os.path.join(out_dir, f"part-{idx:03d}.csv.gz")
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(DATA_URL.format(idx), dst)  # ok: MLS411, MLS412
            return dst
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download shard {idx}")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_shards(paths, out_dir: str, seed: int = 7, n_shards: int = 16):
    rng = np.random.default_rng(seed)  # ok: MLS301
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    df = df.dropna(subset=["label"])
    df["label"] = df["label"].clip(0, 1).astype(np.int8)  # ok: MLS309
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    for i, part in enumerate(np.array_split(df, n_shards)):
        np.save(os.path.join(out_dir, f"x_{i:02d}.npy"), part.drop(columns=["label"]).to_numpy(np.float32))
        np.save(os.path.join(out_dir, f"y_{i:02d}.npy"), part["label"].to_numpy())


def load_shard(out_dir: str, i: int):
    x = np.load(os.path.join(out_dir, f"x_{i:02d}.npy"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    y = np.load(os.path.join(out_dir, f"y_{i:02d}.npy"))
    return x, y


if __name__ == "__main__":
    os.makedirs("data", exist_ok=True)
    files = [download(i, "data") for i in range(8)]
    print({os.path.basename(f): sha256(f)[:12] for f in files})
    build_shards(files, "data")
