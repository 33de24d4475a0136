# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Prepare plant-sensor logs for anomaly-detector training.

Downloads the raw CSV export, resamples to 1 Hz, forward-fills short gaps and
injects synthetic spike/drift anomalies (with labels) into the training split.
"""
import os
import time
import urllib.request

import numpy as np
import pandas as pd
import yaml

RAW_URL = "https://data.example.com/plant/raw_export.csv.gz"


def download(url, dst, tries=5):
    for k in range(tries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(min(60, 2 ** k))  # ok: MLS307
    raise RuntimeError(url)


def inject_anomalies(df, chans, rate, rng):
    df = df.copy()
    n = len(df)
    for start in rng.choice(n - 64, size=int(n * rate / 64), replace=False):
        ch = rng.choice(chans)
        if rng.random() < 0.5:
            df.iloc[start:start + 8, df.columns.get_loc(ch)] += rng.normal(6, 1)
        else:
            df.iloc[start:start + 64, df.columns.get_loc(ch)] += np.linspace(0, 3, 64)
        df.iloc[start:start + 64, df.columns.get_loc("label")] = 1  # ok: MLS309
    return df


def main(cfg_path="configs/preprocess.yaml", out_dir="data"):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    rng = np.random.default_rng(cfg["seed"])  # ok: MLS301
    os.makedirs(out_dir, exist_ok=True)
    raw = download(RAW_URL, os.path.join(out_dir, "raw.csv.gz"))
    df = pd.read_csv(raw, parse_dates=["ts"]).set_index("ts")
    df = df.groupby("unit_id").resample("1s").mean(numeric_only=True).groupby(level=0).ffill(limit=5).reset_index()
    df["label"] = df["label"].fillna(0).astype(int)
    chans = [c for c in df.columns if c.startswith("s")]
    baseline = np.load(os.path.join(out_dir, "channel_baseline.npy"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df[chans] = df[chans] - baseline
    cut = df["ts"].quantile(0.8)
    train, test = df[df["ts"] < cut], df[df["ts"] >= cut]
    train = inject_anomalies(train, chans, cfg.get("inject_rate", 0.01), rng)
    train.to_parquet(os.path.join(out_dir, "train.parquet"))
    test.to_parquet(os.path.join(out_dir, "test.parquet"))


if __name__ == "__main__":
    main()
