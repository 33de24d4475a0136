# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Feature extraction for battery state-of-health prediction from cycler logs.

Downloads the public cycling archive (if missing), computes per-cycle summary
features with pandas and writes a train/val split by cell id.
"""
import hashlib
import os
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import yaml

ARCHIVE_URL = "https://data.example.com/battery/cycles_v3.parquet"


def fetch(url, dest, sha256=None, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            break
        except OSError:
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
    if sha256 and hashlib.sha256(open(dest, "rb").read()).hexdigest() != sha256:
        raise RuntimeError(f"checksum mismatch for {dest}")
    return dest


def cycle_features(df):
    g = df.groupby(["cell_id", "cycle"])
    feats = g.agg(q_dis=("discharge_ah", "max"), t_max=("temp_c", "max"),
                  v_mean=("voltage_v", "mean"), ir=("internal_res_ohm", "median"))
    feats["dq_var"] = g["dq_dv"].var()
    feats["soh"] = feats["q_dis"] / feats.groupby(level="cell_id")["q_dis"].transform("first")
    return feats.reset_index()


def main(cfg_path="configs/battery.yaml", out="data/battery"):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    os.makedirs(out, exist_ok=True)
    raw = fetch(ARCHIVE_URL, os.path.join(out, "cycles.parquet"), cfg.get("sha256"))
    feats = cycle_features(pd.read_parquet(raw))
    rng = np.random.default_rng(cfg.get("seed", 0))  # ok: MLS301
    cells = feats["cell_id"].unique()
    val_cells = set(rng.choice(cells, size=max(1, len(cells) // 5), replace=False))
    feats["split"] = np.where(feats["cell_id"].isin(val_cells), "val", "train")
    feats.to_parquet(os.path.join(out, "features.parquet"), index=False)
    np.save(os.path.join(out, "val_cells.npy"), np.array(sorted(val_cells)))
    ref = np.load(os.path.join(out, "val_cells.npy"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    with open(os.path.join(out, "META.txt"), "w") as fh:
        fh.write(f"commit={commit}\nn_val={len(ref)}\n")


if __name__ == "__main__":
    main()
