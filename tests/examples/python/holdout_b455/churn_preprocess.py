# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""Feature preparation for subscription churn prediction (gradient-boosted trees)."""
import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)
CATEGORICAL = ["plan", "region", "payment_method", "acquisition_channel"]


def load_and_clean(path, target="churned"):
    df = pd.read_csv(path, parse_dates=["signup_date", "last_active", "snapshot_date"])
    df = df.dropna(subset=[target])  # ok: MLS309
    df[target] = df[target].astype(int)
    df["tenure_days"] = (df["snapshot_date"] - df["signup_date"]).dt.days
    df["days_inactive"] = (df["snapshot_date"] - df["last_active"]).dt.days
    df.loc[df["tenure_days"] < 90, target] = 0  # ruleid: MLS309
    df["monthly_spend_log"] = np.log1p(df["monthly_spend"].clip(lower=0))
    df["tickets_per_month"] = df["support_tickets"] / np.maximum(df["tenure_days"] / 30.0, 1.0)
    for col in CATEGORICAL:
        df[col] = df[col].fillna("unknown").astype("category")
    return df


def split(df, target="churned", test_size=0.2, seed=13):
    features = [c for c in df.columns
                if c not in (target, "customer_id", "signup_date", "last_active", "snapshot_date")]
    X_tr, X_te, y_tr, y_te = train_test_split(df[features], df[target], test_size=test_size,
                                              stratify=df[target], random_state=seed)
    logger.info("train=%d (pos %.3f) test=%d (pos %.3f)", len(y_tr), y_tr.mean(),
                len(y_te), y_te.mean())
    return X_tr, X_te, y_tr, y_te


def scale_pos_weight(y):
    pos = int(y.sum())
    return (len(y) - pos) / max(pos, 1)
