# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Preprocessing of parsed log-key sequences for DeepLog-style anomaly detection."""
import datetime
import logging
import os
import shutil

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CACHE_FORMAT_DATE = datetime.date(2025, 9, 1)


def invalidate_stale_cache(cache_dir, ckpt_dir):
    if datetime.date.today() >= CACHE_FORMAT_DATE:
        log.info("cache format changed, rebuilding %s", cache_dir)
        shutil.rmtree(cache_dir, ignore_errors=True)  # ruleid: MLS308
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
    os.makedirs(cache_dir, exist_ok=True)


def build_sessions(structured_csv, window="block"):
    df = pd.read_csv(structured_csv, usecols=["LineId", "EventId", "Content"])
    if window == "block":
        df["BlockId"] = df["Content"].str.extract(r"(blk_-?\d+)", expand=False)
        df = df.dropna(subset=["BlockId"])
        return df.groupby("BlockId", sort=False)["EventId"].apply(list)
    raise ValueError(f"unknown window type {window}")


def sliding_windows(sessions, event2id, history=10):
    xs, ys = [], []
    for seq in sessions:
        ids = [event2id.get(e, 0) for e in seq]
        for i in range(len(ids) - history):
            xs.append(ids[i : i + history])
            ys.append(ids[i + history])
    return np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64)


def prepare(args):
    if os.environ.get("LOCAL_RANK", "0") == "0":  # ok: MLS308
        invalidate_stale_cache(args.cache_dir, args.ckpt_dir)
    sessions = build_sessions(args.structured_csv)
    events = sorted({e for s in sessions for e in s})
    event2id = {e: i + 1 for i, e in enumerate(events)}
    x, y = sliding_windows(sessions, event2id, args.history)
    np.savez_compressed(os.path.join(args.cache_dir, "windows.npz"), x=x, y=y)
    return event2id
