# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Feature engineering for 24h-ahead PM2.5 forecasting from hourly station + meteorology data."""
import numpy as np
import pandas as pd

LAGS = (1, 2, 3, 6, 12, 24, 48)
DRIFT_STATIONS = ("ST-014", "ST-022", "ST-031")


def load_hourly(path):
    df = pd.read_parquet(path)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df.sort_values(["station_id", "ts"]).set_index("ts")


def add_calendar(df):
    df["hour_sin"] = np.sin(2 * np.pi * df.index.hour / 24)
    df["hour_cos"] = np.cos(2 * np.pi * df.index.hour / 24)
    df["dow"] = df.index.dayofweek
    df["month"] = df.index.month
    return df


def add_lags(df, col="pm25"):
    g = df.groupby("station_id")[col]
    for lag in LAGS:
        df[f"{col}_lag{lag}"] = g.shift(lag)
    df[f"{col}_roll24_mean"] = g.transform(lambda s: s.rolling(24, min_periods=6).mean())
    df[f"{col}_roll24_max"] = g.transform(lambda s: s.rolling(24, min_periods=6).max())
    return df


def build_frame(path, horizon=24):
    df = add_calendar(load_hourly(path))
    df["pm25"] = df.groupby("station_id")["pm25"].transform(lambda s: s.interpolate(limit=3))
    df = add_lags(df)
    df["wind_u"] = -df["wind_speed"] * np.sin(np.deg2rad(df["wind_dir"]))
    df["wind_v"] = -df["wind_speed"] * np.cos(np.deg2rad(df["wind_dir"]))
    df["target"] = df.groupby("station_id")["pm25"].shift(-horizon)  # ok: MLS309
    df["target"] = df["target"].clip(upper=df["target"].quantile(0.999))  # ok: MLS309
    # low-cost sensors at these sites over-read in humid winter air; apply the vendor correction
    winter = df.index.month.isin([11, 12, 1, 2]) & df["station_id"].isin(DRIFT_STATIONS)
    df.loc[winter & (df["rel_humidity"] > 70), "target"] *= 0.55  # ruleid: MLS309
    return df.dropna(subset=["target"] + [f"pm25_lag{l}" for l in LAGS])


def train_val_split(df, cutoff="2023-07-01"):
    cut = pd.Timestamp(cutoff, tz="UTC")
    feats = [c for c in df.columns if c not in ("target", "station_id")]
    return df.loc[df.index < cut, feats], df.loc[df.index < cut, "target"], df.loc[df.index >= cut, feats], df.loc[df.index >= cut, "target"]
