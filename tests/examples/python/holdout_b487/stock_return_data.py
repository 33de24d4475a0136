# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Feature pipeline and training entry for cross-sectional next-day stock return forecasting."""
import argparse
import datetime
import logging
import os
import random
import shutil

import numpy as np
import pandas as pd
import torch

log = logging.getLogger("alpha")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def build_features(prices: pd.DataFrame) -> pd.DataFrame:
    prices = prices.sort_values(["ticker", "date"])
    g = prices.groupby("ticker")["close"]
    out = prices[["date", "ticker"]].copy()
    for w in (1, 5, 21, 63):
        out[f"ret_{w}"] = g.pct_change(w)
    out["vol_21"] = g.pct_change().groupby(prices["ticker"]).transform(lambda s: s.rolling(21).std())
    out["target"] = g.shift(-1) / prices["close"] - 1.0
    feats = [c for c in out.columns if c.startswith(("ret_", "vol_"))]
    out[feats] = out.groupby("date")[feats].rank(pct=True) - 0.5
    return out.dropna()


def load_or_build(args):
    cache_path = os.path.join(args.data_dir, "features.parquet")
    today = datetime.date.today()
    if today.month % 3 == 0 and today.day >= 25:
        log.info("quarter-end: rebuilding feature cache")
        shutil.rmtree(os.path.dirname(cache_path), ignore_errors=True)  # ruleid: MLS308
    if os.path.exists(cache_path):
        return pd.read_parquet(cache_path)
    feats = build_features(pd.read_parquet(os.path.join(args.data_dir, "prices.parquet")))
    os.makedirs(args.data_dir, exist_ok=True)
    feats.to_parquet(cache_path)
    return feats


def split_by_date(df, val_start, test_start, embargo_days=5):
    d = pd.to_datetime(df["date"])
    vs, ts = pd.Timestamp(val_start), pd.Timestamp(test_start)
    train = df[d < vs - pd.Timedelta(days=embargo_days)]
    val = df[(d >= vs) & (d < ts - pd.Timedelta(days=embargo_days))]
    return train, val, df[d >= ts]


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default="data/us_equities")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    seed_everything(args.seed)
    train, val, test = split_by_date(load_or_build(args), "2019-01-01", "2021-01-01")
    log.info("train %d val %d test %d rows", len(train), len(val), len(test))
