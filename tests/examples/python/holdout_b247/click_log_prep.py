# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Turn raw SERP impression logs into per-session training tensors for click models."""
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import yaml


def download(url, dst, retries=5, timeout=60):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dst, "wb") as fh:  # ok: MLS411, MLS412
                fh.write(r.read())
            return dst
        except urllib.error.URLError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def load_config(path="configs/clicks.yaml"):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def build_sessions(df, max_rank=10, rng=None):
    df = df[df["rank"] < max_rank]
    bots = df.groupby("session_id")["click"].transform("sum") > 0.8 * max_rank
    df = df[~bots]
    df["dwell"] = df["dwell"].clip(upper=600)  # ok: MLS309
    df["satisfied"] = (df["click"] == 1) & (df["dwell"] >= 30)
    sessions = [g.sort_values("rank") for _, g in df.groupby("session_id") if len(g) == max_rank]
    if rng is not None:
        rng.shuffle(sessions)
    return sessions


def main():
    cfg = load_config()
    rng = np.random.default_rng(cfg.get("seed", 0))  # ok: MLS301
    out_dir = os.path.join("/scratch", os.environ.get("USER", "shared"), "click_data")  # ok: MLS308
    os.makedirs(out_dir, exist_ok=True)
    raw = os.path.join(out_dir, "impressions.parquet")
    if not os.path.exists(raw):
        download(cfg["logs_url"], raw)
    sessions = build_sessions(pd.read_parquet(raw), cfg.get("max_rank", 10), rng)
    feats = np.stack([s[cfg["feature_columns"]].to_numpy(np.float32) for s in sessions])
    clicks = np.stack([s["click"].to_numpy(np.int8) for s in sessions])
    np.savez_compressed(os.path.join(out_dir, "sessions.npz"), feats=feats, clicks=clicks)
    print(f"wrote {len(sessions)} sessions to {out_dir}")


if __name__ == "__main__":
    main()
