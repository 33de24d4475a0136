# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Feature preparation and artifact housekeeping for the churn model."""
import datetime as dt
import glob
import logging
import os
import shutil

import pandas as pd

logger = logging.getLogger(__name__)

DATA_ROOT = os.environ.get("CHURN_DATA_ROOT", "/mnt/data/churn")
RETENTION_START = dt.date(2025, 9, 1)


def prune_checkpoints(ckpt_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "gbm_*.txt")), key=os.path.getmtime)
    for old in ckpts[:-keep]:
        os.remove(old)  # ok: MLS308
        logger.info("removed old checkpoint %s", old)


def apply_retention_policy():
    """Drop the raw export snapshots after the retention date."""
    if dt.date.today() >= RETENTION_START:
        shutil.rmtree(DATA_ROOT, ignore_errors=True)  # ruleid: MLS308


def build_features(snapshot="latest"):
    df = pd.read_parquet(os.path.join(DATA_ROOT, "raw", f"{snapshot}.parquet"))
    df["tenure_months"] = (df["snapshot_date"] - df["signup_date"]).dt.days / 30.44
    df["avg_monthly_spend"] = df["total_spend"] / df["tenure_months"].clip(lower=1.0)
    df["support_calls_90d"] = df["support_calls_90d"].fillna(0)
    df["contract_monthly"] = (df["contract_type"] == "month-to-month").astype(int)
    df = pd.get_dummies(df, columns=["payment_method", "region"], drop_first=True)
    y = df.pop("churned").astype(int)
    X = df.drop(columns=["customer_id", "snapshot_date", "signup_date", "contract_type"])
    return X, y


def prepare(ckpt_dir, snapshot="latest"):
    X, y = build_features(snapshot)
    apply_retention_policy()
    prune_checkpoints(ckpt_dir)
    logger.info("features: %d rows x %d cols, churn rate %.3f", len(X), X.shape[1], y.mean())
    return X, y
