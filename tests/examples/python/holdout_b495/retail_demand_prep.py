# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Preprocessing for store-SKU daily demand forecasting."""
import numpy as np
import pandas as pd


def load_sales(path, calendar_path):
    df = pd.read_parquet(path)
    cal = pd.read_csv(calendar_path, parse_dates=["date"])
    df = df.merge(cal, on="date", how="left")
    df = df.sort_values(["store_id", "sku_id", "date"]).reset_index(drop=True)
    return df


def clean_sales(df):
    # returns booked as negative sales
    df["sales"] = df["sales"].clip(lower=0)  # ok: MLS309
    grp = df.groupby(["store_id", "sku_id"])["sales"]
    # cap promo-driven spikes per series before fitting
    df["sales"] = df["sales"].clip(upper=grp.transform("median"))  # todoruleid: family 6 (missed)
    df["is_stockout"] = (df["sales"] == 0) & (df["on_hand"] == 0)
    return df


def add_features(df, lags=(7, 14, 28), windows=(7, 28)):
    g = df.groupby(["store_id", "sku_id"])["sales"]
    for lag in lags:
        df[f"lag_{lag}"] = g.shift(lag)
    for w in windows:
        df[f"rmean_{w}"] = g.transform(lambda s: s.shift(7).rolling(w, min_periods=1).mean())
    df["dow"] = df["date"].dt.dayofweek
    df["month"] = df["date"].dt.month
    df["log_price"] = np.log1p(df["sell_price"])
    return df


def split_by_date(df, val_start, test_start):
    train = df[df["date"] < val_start]
    val = df[(df["date"] >= val_start) & (df["date"] < test_start)]
    test = df[df["date"] >= test_start]
    return train, val, test
