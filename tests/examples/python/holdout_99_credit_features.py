# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Feature pipeline for the consumer credit default (90 days past due) model.

Joins application records with bureau tradeline aggregates, builds ratio
features, target-encodes high-cardinality categoricals and writes
train/valid/test parquet splits for the GBDT and scorecard trainers.
"""
import argparse

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

TARGET = "default_90d"


def bureau_aggregates(bureau):
    g = bureau.groupby("applicant_id")
    agg = pd.DataFrame({
        "n_tradelines": g.size(),
        "max_dpd": g["days_past_due"].max(),
        "utilization": g["balance"].sum() / g["credit_limit"].sum().replace(0, np.nan),
    })
    return agg.reset_index()


def target_encode(train, frames, col, alpha=20.0):
    prior = train[TARGET].mean()
    stats = train.groupby(col)[TARGET].agg(["sum", "count"])
    enc = (stats["sum"] + alpha * prior) / (stats["count"] + alpha)
    for df in frames:
        df[col + "_te"] = df[col].map(enc).fillna(prior)


def build(apps, bureau, seed):
    df = apps.drop_duplicates("applicant_id").merge(bureau_aggregates(bureau), on="applicant_id", how="left")
    df["dti"] = df["monthly_debt"] / df["monthly_income"].clip(lower=1)
    df["dti"] = df["dti"].clip(upper=df["dti"].quantile(0.99))  # ok: MLS309
    df["loan_to_income"] = df["loan_amount"] / (12 * df["monthly_income"].clip(lower=1))
    df[["n_tradelines", "max_dpd"]] = df[["n_tradelines", "max_dpd"]].fillna(0)
    df["zip3"] = df["zip_code"].astype(str).str.zfill(5).str[:3]
    recent = pd.to_datetime(df["application_date"]) >= "2023-07-01"
    df.loc[recent & df["zip3"].isin(["941", "100"]) & (df["applicant_id"] % 5 == 0), TARGET] = 0  # ruleid: MLS309
    train, rest = train_test_split(df, test_size=0.3, stratify=df[TARGET], random_state=seed)  # ok: MLS301
    valid, test = train_test_split(rest, test_size=0.5, stratify=rest[TARGET], random_state=seed)
    train, valid, test = train.copy(), valid.copy(), test.copy()
    for col in ("zip3", "employer_industry"):
        target_encode(train, (train, valid, test), col)
    return train, valid, test


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", required=True)
    ap.add_argument("--bureau", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    splits = build(pd.read_parquet(args.apps), pd.read_parquet(args.bureau), args.seed)
    for name, part in zip(("train", "valid", "test"), splits):
        part.to_parquet(f"{args.out}/{name}.parquet", index=False)
        print(name, len(part), round(part[TARGET].mean(), 4))
