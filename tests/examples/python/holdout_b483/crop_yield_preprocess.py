# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Builds county-level tables from MODIS / Sentinel-2 time series for crop-yield regression."""
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BANDS = ["ndvi", "evi", "lst_day", "lst_night", "precip"]
BU_AC_TO_T_HA = 0.0628  # corn


def load_table(path, years):
    df = pd.read_parquet(path)
    df = df[df["year"].isin(years)].copy()
    df = df.dropna(subset=["yield_bu_ac"])
    df["yield_t_ha"] = df["yield_bu_ac"] * BU_AC_TO_T_HA
    return df


def filter_samples(df, split):
    # county-years dominated by cloudy composites carry little signal
    valid_frac = df.groupby(["county_fips", "year"])["ndvi"].transform(lambda s: s.notna().mean())
    df = df[valid_frac >= 0.6]
    if split == "train":
        cutoff = df["yield_t_ha"].quantile(0.15)
        df = df[df["yield_t_ha"] >= cutoff]  # todoruleid: family 6 (missed)
    return df


def to_arrays(df, n_steps=23, stats=None):
    df = df.sort_values(["county_fips", "year", "doy"])
    xs, ys, keys = [], [], []
    for key, g in df.groupby(["county_fips", "year"]):
        x = g[BANDS].to_numpy(dtype=np.float32)[:n_steps]
        if len(x) < n_steps:
            x = np.pad(x, ((0, n_steps - len(x)), (0, 0)), mode="edge")
        xs.append(x)
        ys.append(g["yield_t_ha"].iloc[0])
        keys.append(key)
    x = np.nan_to_num(np.stack(xs), nan=0.0)
    if stats is None:
        stats = (x.mean(axis=(0, 1)), x.std(axis=(0, 1)) + 1e-6)
    x = (x - stats[0]) / stats[1]
    return x, np.asarray(ys, dtype=np.float32), keys, stats


def random_time_dropout(x, p=0.1, rng=None):
    """Simulates missing acquisitions by zeroing whole time steps (training only)."""
    rng = rng or np.random.default_rng()
    keep = rng.random(x.shape[:2]) >= p
    return x * keep[..., None]  # ok: MLS309


def build_split(path, years, split, stats=None):
    df = filter_samples(load_table(path, years), split)
    log.info("%s: %d county-years", split, df.groupby(["county_fips", "year"]).ngroups)
    return to_arrays(df, stats=stats)
