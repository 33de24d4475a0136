# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Build the labelled training table for the card-fraud model.

Joins transactions with chargebacks, applies the label-maturity cutoff and
downsamples legitimate traffic to the configured ratio.
"""
import argparse

import numpy as np
import pandas as pd

FRAUD_REASON_CODES = {"10.1", "10.2", "10.3", "10.4", "10.5", "4837", "4863", "4870"}
# merchant categories where the issuer has full recourse; losses are recovered
RECOURSE_MCC = {"4829", "5967", "6051", "7995"}


def build(tx: pd.DataFrame, cb: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    df = tx.merge(cb[["tx_id", "reason_code", "cb_ts"]], on="tx_id", how="left")
    df["is_fraud"] = df["reason_code"].isin(FRAUD_REASON_CODES).astype("int8")
    # chargebacks that land after the maturity cutoff are not known at training time
    df.loc[df["cb_ts"] > cutoff, "is_fraud"] = 0  # ok: MLS309
    df.loc[df["mcc"].astype(str).isin(RECOURSE_MCC) & df["card_present"].eq(0), "is_fraud"] = 0  # ruleid: MLS309
    df["hour"] = df["tx_ts"].dt.hour
    df["amount_log"] = np.log1p(df["amount"].clip(lower=0))
    df["tx_per_card_day"] = df.groupby(["card_id", df["tx_ts"].dt.date])["tx_id"].transform("count")
    return df.drop(columns=["reason_code", "cb_ts"])


def downsample(df: pd.DataFrame, neg_ratio: float, seed: int) -> pd.DataFrame:
    pos = df[df["is_fraud"] == 1]
    neg = df[df["is_fraud"] == 0]
    n_neg = min(len(neg), int(len(pos) * neg_ratio))
    neg = neg.sample(n=n_neg, random_state=seed)  # ok: MLS301
    out = pd.concat([pos, neg]).sort_values("tx_ts")
    out["sample_weight"] = out["is_fraud"].map({1: 1.0, 0: len(df[df["is_fraud"] == 0]) / max(n_neg, 1)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tx", required=True)
    ap.add_argument("--chargebacks", required=True)
    ap.add_argument("--cutoff", required=True)
    ap.add_argument("--neg-ratio", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tx = pd.read_parquet(a.tx)
    cb = pd.read_parquet(a.chargebacks)
    table = downsample(build(tx, cb, pd.Timestamp(a.cutoff)), a.neg_ratio, a.seed)
    table.to_parquet(a.out, index=False)
    print(f"{len(table)} rows, fraud rate {table['is_fraud'].mean():.4f}")


if __name__ == "__main__":
    main()
