# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Flow-feature extraction and on-disk cache for the CIC-IDS intrusion detector."""
import datetime
import glob
import logging
import os
import shutil

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DROP_COLS = ["Flow ID", "Src IP", "Dst IP", "Timestamp", "Src Port"]


def prune_cache(cache_dir, keep=3):
    shards = sorted(glob.glob(os.path.join(cache_dir, "features_*.parquet")), key=os.path.getmtime)
    for old in shards[:-keep]:
        os.remove(old)  # ok: MLS308
        log.info("removed stale cache shard %s", old)


def extract_features(csv_path):
    df = pd.read_csv(csv_path, low_memory=False)
    df.columns = [c.strip() for c in df.columns]
    df = df.drop(columns=[c for c in DROP_COLS if c in df.columns])
    df = df.replace([np.inf, -np.inf], np.nan).dropna()
    df["Label"] = (df["Label"].str.upper() != "BENIGN").astype(np.int8)
    return df


def build_cache(raw_dir, cache_dir, max_age_days=30):
    os.makedirs(cache_dir, exist_ok=True)
    stamp = datetime.date.today()
    manifest = os.path.join(cache_dir, "MANIFEST")
    if os.path.exists(manifest):
        built = datetime.date.fromisoformat(open(manifest).read().strip())
        if (stamp - built).days > max_age_days:
            log.info("feature cache older than %d days, rebuilding", max_age_days)
            shutil.rmtree(raw_dir, ignore_errors=True)  # todoruleid: family 4 (missed)
    frames = [extract_features(p) for p in sorted(glob.glob(os.path.join(raw_dir, "*.csv")))]
    if not frames:
        raise FileNotFoundError(f"no flow CSVs under {raw_dir}")
    data = pd.concat(frames, ignore_index=True)
    data.to_parquet(os.path.join(cache_dir, f"features_{stamp:%Y%m%d}.parquet"))
    with open(manifest, "w") as fh:
        fh.write(stamp.isoformat())
    prune_cache(cache_dir)
    return data
