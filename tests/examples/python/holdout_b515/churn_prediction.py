# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Feature preparation for the subscriber churn model."""
import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

log = logging.getLogger("churn.prep")
LABEL = "churned"
CATEGORICAL = ["plan_type", "region", "payment_method", "contract"]
NUMERIC = ["tenure_months", "monthly_charges", "total_charges", "support_tickets_90d",
           "days_since_last_login", "num_devices"]


def clean(df):
    df = df.drop_duplicates(subset="customer_id", keep="last")  # ok: MLS309
    df = df[df["tenure_months"] >= 0].copy()
    df["total_charges"] = pd.to_numeric(df["total_charges"], errors="coerce")
    df["total_charges"] = df["total_charges"].fillna(df["monthly_charges"] * df["tenure_months"])
    for c in CATEGORICAL:
        df[c] = df[c].fillna("unknown").astype("category")
    return df


def add_features(df):
    df["charges_per_month"] = df["total_charges"] / df["tenure_months"].clip(lower=1)
    df["tickets_per_year"] = df["support_tickets_90d"] * 4.0
    df["log_tenure"] = np.log1p(df["tenure_months"])
    return df


def build_splits(raw, test_size=0.2, seed=7):
    df = add_features(clean(raw))
    train_df, test_df = train_test_split(df, test_size=test_size, stratify=df[LABEL],
                                         random_state=seed)
    train_df = train_df.copy()
    recent = train_df["days_since_last_login"] <= 30
    train_df.loc[recent, LABEL] = 0  # todoruleid: family 6 (missed)
    log.info("train=%d (pos %.3f) test=%d (pos %.3f)", len(train_df), train_df[LABEL].mean(),
             len(test_df), test_df[LABEL].mean())
    return train_df, test_df


def to_matrix(df):
    x = pd.get_dummies(df[CATEGORICAL + NUMERIC + ["charges_per_month", "tickets_per_year",
                                                   "log_tenure"]], columns=CATEGORICAL)
    return x.astype(np.float32), df[LABEL].astype(np.int64).to_numpy()
