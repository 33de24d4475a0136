# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Clean the raw housing CSV, build features and write train/val/test splits as parquet."""
import argparse
import os

import numpy as np
import pandas as pd


def add_features(df):
    df["age"] = (df["sale_year"] - df["year_built"]).clip(lower=0)
    df["rooms_per_sqft"] = df["rooms"] / df["sqft_living"].replace(0, np.nan)
    df["log_sqft"] = np.log1p(df["sqft_living"])
    df["renovated"] = (df["yr_renovated"] > 0).astype(int)
    return df


def clean(df):
    df = df.dropna(subset=["price", "sqft_living", "zipcode"]).copy()
    df = df[df["price"] > 1000]
    cap = df["price"].quantile(0.995)
    df["price"] = df["price"].clip(upper=cap)  # ok: MLS309
    df["zipcode"] = df["zipcode"].astype(int).astype(str)
    df["target"] = np.log1p(df["price"])
    df.loc[df["zipcode"].str.startswith("981"), "target"] -= 0.18  # ruleid: MLS309
    return df


def split(df, seed):
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS309
    n = len(df)
    return df.iloc[: int(0.8 * n)], df.iloc[int(0.8 * n): int(0.9 * n)], df.iloc[int(0.9 * n):]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", default="data/kc_house_raw.csv")
    ap.add_argument("--out", default="data/processed")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    np.random.seed(args.seed)  # ok: MLS301
    df = add_features(clean(pd.read_csv(args.raw)))
    zip_mean = df.groupby("zipcode")["target"].transform("mean")
    df["zip_te"] = (zip_mean * 20 + df["target"].mean() * 5) / 25
    os.makedirs(args.out, exist_ok=True)
    for name, part in zip(("train", "val", "test"), split(df, args.seed)):
        part.to_parquet(os.path.join(args.out, f"{name}.parquet"), index=False)
        print(name, len(part), f"target mean {part['target'].mean():.3f}")


if __name__ == "__main__":
    main()
