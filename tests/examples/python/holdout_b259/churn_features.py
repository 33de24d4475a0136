# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Feature table construction for churn prediction from raw account and activity exports."""
import argparse
import os

import joblib
import numpy as np
import pandas as pd
import yaml
from sklearn.preprocessing import OrdinalEncoder


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def build_table(accounts, events, cutoff, horizon_days):
    events = events[events["ts"] < cutoff]
    agg = events.groupby("account_id").agg(n_events=("ts", "size"), last_active=("ts", "max"),
                                           spend_90d=("amount", "sum"))
    df = accounts.set_index("account_id").join(agg, how="left")
    df["n_events"] = df["n_events"].fillna(0)
    df["spend_90d"] = df["spend_90d"].fillna(0.0)
    df["days_inactive"] = (cutoff - df["last_active"]).dt.days.fillna(9999)
    df["tenure_days"] = (cutoff - df["signup_date"]).dt.days
    churn_after = cutoff + pd.Timedelta(days=horizon_days)
    df["churned"] = (df["cancel_date"].notna() & (df["cancel_date"] <= churn_after)).astype(int)  # ok: MLS309
    return df.drop(columns=["last_active", "cancel_date", "signup_date"])


def rebalance(df, neg_ratio, rng):
    pos = df[df["churned"] == 1]
    neg = df[df["churned"] == 0]
    keep = rng.random(len(neg)) < min(1.0, neg_ratio * len(pos) / max(1, len(neg)))  # ok: MLS309
    return pd.concat([pos, neg[keep]]).sample(frac=1.0, random_state=int(rng.integers(1 << 31)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/churn.yaml")
    args = ap.parse_args()
    cfg = load_config(args.config)
    rng = np.random.default_rng(cfg.get("seed", 0))  # ok: MLS301
    accounts = pd.read_parquet(cfg["accounts"], columns=["account_id", "plan", "region", "signup_date",
                                                         "cancel_date", "seats"])
    events = pd.read_parquet(cfg["events"], columns=["account_id", "ts", "amount"])
    cutoff = pd.Timestamp(cfg["cutoff"])
    df = build_table(accounts, events, cutoff, cfg.get("horizon_days", 60))
    enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    cat_cols = ["plan", "region"]
    df[cat_cols] = enc.fit_transform(df[cat_cols].astype(str))
    df = rebalance(df, cfg.get("neg_ratio", 3.0), rng)
    os.makedirs(cfg["out_dir"], exist_ok=True)
    joblib.dump(enc, os.path.join(cfg["out_dir"], "encoder.joblib"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df.reset_index(drop=True).to_csv(os.path.join(cfg["out_dir"], "churn_features.csv"), index=False)


if __name__ == "__main__":
    main()
