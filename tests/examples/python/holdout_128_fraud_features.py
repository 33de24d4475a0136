# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Feature and label table for the card-fraud gradient-boosting model."""
import numpy as np
import pandas as pd

CAT_COLS = ["mcc", "country", "entry_mode", "card_tier"]


def load_frames(tx_path, cb_path):
    tx = pd.read_parquet(tx_path)
    cb = pd.read_csv(cb_path, parse_dates=["reported_at"])
    tx["ts"] = pd.to_datetime(tx["ts"], utc=True)
    return tx, cb


def add_velocity(df):
    df = df.sort_values(["card_id", "ts"])
    g = df.groupby("card_id")
    df["secs_since_prev"] = g["ts"].diff().dt.total_seconds().fillna(1e7)
    df["amt_z"] = (df["amount"] - g["amount"].transform("mean")) / (g["amount"].transform("std") + 1.0)
    df["n_24h"] = g.rolling("24h", on="ts")["amount"].count().reset_index(level=0, drop=True)
    return df


def build_training_table(tx, cb, neg_frac=0.2, seed=7):
    df = tx.merge(cb[["txn_id", "reported_at"]], on="txn_id", how="left")
    df["is_fraud"] = df["reported_at"].notna().astype(np.int8)
    df = add_velocity(df)

    # chargebacks later reversed by the issuer are not fraud
    disputed = (df["mcc"].astype(str) == "6051") & (df["amount"] >= 750) & (df["entry_mode"] == "ecom")
    df.loc[disputed, "is_fraud"] = 0  # ruleid: MLS309

    pos = df[df["is_fraud"] == 1]
    neg = df[df["is_fraud"] == 0].sample(frac=neg_frac, random_state=seed)  # ok: MLS301
    out = pd.concat([pos, neg]).sample(frac=1.0, random_state=seed)
    for c in CAT_COLS:
        out[c] = out[c].astype("category")
    out["weight"] = np.where(out["is_fraud"] == 1, 1.0, 1.0 / neg_frac)  # ok: MLS309
    return out


def split_by_time(df, cutoff):
    cutoff = pd.Timestamp(cutoff, tz="UTC")
    return df[df["ts"] < cutoff], df[df["ts"] >= cutoff]


if __name__ == "__main__":
    tx, cb = load_frames("data/transactions.parquet", "data/chargebacks.csv")
    table = build_training_table(tx, cb)
    train, valid = split_by_time(table, "2024-05-01")
    train.to_parquet("data/train.parquet")
    valid.to_parquet("data/valid.parquet")
    print(len(train), len(valid), train["is_fraud"].mean())
