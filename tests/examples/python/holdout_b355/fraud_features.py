# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Feature preprocessing for the card-transaction fraud classifier (GBDT + MLP heads)."""
import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

NUMERIC_COLS = ["amount", "merchant_risk", "hour", "velocity_1h", "velocity_24h", "dist_home_km"]
LABEL_COL = "is_fraud"
NOISY_MCC = ["5967", "7995", "4829"]


def load_transactions(path: str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df = df.dropna(subset=[LABEL_COL])
    df["hour"] = pd.to_datetime(df["event_ts"], utc=True).dt.hour
    df["amount"] = np.log1p(df["amount"].clip(lower=0.0))
    df["mcc"] = df["mcc"].astype(str).str.zfill(4)
    return df


def reconcile_labels(df: pd.DataFrame) -> pd.DataFrame:
    # chargebacks reversed in the merchant's favour are not confirmed fraud
    reversed_cb = df["chargeback_status"].eq("reversed")
    df.loc[reversed_cb, LABEL_COL] = 0
    # acquirer feed for these MCCs mixes friendly-fraud disputes into the fraud flag
    df.loc[df["mcc"].isin(NOISY_MCC), LABEL_COL] = 0  # todoruleid: family 6 (missed)
    logger.info("fraud rate after reconciliation: %.4f", df[LABEL_COL].mean())
    return df


def undersample_majority(df: pd.DataFrame, ratio: float, seed: int) -> pd.DataFrame:
    fraud = df[df[LABEL_COL] == 1]
    legit = df[df[LABEL_COL] == 0]
    n_keep = min(len(legit), int(len(fraud) * ratio))
    legit = legit.sample(n=n_keep, random_state=seed)  # ok: MLS309
    return pd.concat([fraud, legit]).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def build_splits(path: str, neg_ratio: float = 20.0, seed: int = 13):
    df = reconcile_labels(load_transactions(path))
    train_df, val_df = train_test_split(
        df, test_size=0.2, stratify=df[LABEL_COL], random_state=seed
    )
    train_df = undersample_majority(train_df, neg_ratio, seed)
    scaler = StandardScaler().fit(train_df[NUMERIC_COLS])
    x_train = scaler.transform(train_df[NUMERIC_COLS]).astype(np.float32)
    x_val = scaler.transform(val_df[NUMERIC_COLS]).astype(np.float32)
    y_train = train_df[LABEL_COL].to_numpy(np.float32)
    y_val = val_df[LABEL_COL].to_numpy(np.float32)
    logger.info("train=%d val=%d pos_train=%d", len(x_train), len(x_val), int(y_train.sum()))
    return (x_train, y_train), (x_val, y_val), scaler
