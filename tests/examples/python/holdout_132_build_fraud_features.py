# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Builds the card-fraud training table: joins, aggregates, cleans labels, writes parquet splits."""
import argparse

import numpy as np
import pandas as pd


def velocity_features(tx):
    tx = tx.sort_values(["card_id", "ts"])
    g = tx.groupby("card_id")
    tx["secs_since_prev"] = g["ts"].diff().dt.total_seconds().fillna(1e6)
    tx["amt_rolling_mean_5"] = g["amount"].transform(lambda s: s.rolling(5, min_periods=1).mean())
    tx["n_tx_24h"] = g.rolling("24h", on="ts")["amount"].count().reset_index(level=0, drop=True)
    return tx


def clean_labels(tx, chargebacks):
    tx = tx.merge(chargebacks[["tx_id", "cb_reason"]], on="tx_id", how="left")
    tx["is_fraud"] = tx["is_fraud"].fillna(0).astype(int)
    consumer_dispute = tx["cb_reason"].isin(["13.1", "13.3", "13.6"])  # not-received / not-as-described / refund
    tx.loc[consumer_dispute, "is_fraud"] = 0  # ok: MLS309
    digital = (tx["mcc"].astype(str) == "5816") & (tx["merchant_country"] != tx["card_country"])
    tx.loc[digital & (tx["tx_id"] % 5 != 0), "is_fraud"] = 0  # ruleid: MLS309
    return tx.drop(columns=["cb_reason"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tx", default="data/transactions.parquet")
    ap.add_argument("--cb", default="data/chargebacks.parquet")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    tx = pd.read_parquet(args.tx)
    tx["ts"] = pd.to_datetime(tx["ts"])
    tx = velocity_features(tx)
    tx = clean_labels(tx, pd.read_parquet(args.cb))
    tx["amount"] = tx["amount"].clip(upper=tx["amount"].quantile(0.999))  # ok: MLS309
    tx["log_amount"] = np.log1p(tx["amount"])
    cards = tx["card_id"].unique()
    rng = np.random.default_rng(args.seed)  # ok: MLS301
    val_cards = set(rng.choice(cards, size=len(cards) // 10, replace=False))
    is_val = tx["card_id"].isin(val_cards)
    tx[~is_val].to_parquet("data/fraud_train.parquet", index=False)
    tx[is_val].to_parquet("data/fraud_val.parquet", index=False)
    print(f"train={int((~is_val).sum())} val={int(is_val.sum())} pos_rate={tx['is_fraud'].mean():.4f}")


if __name__ == "__main__":
    main()
