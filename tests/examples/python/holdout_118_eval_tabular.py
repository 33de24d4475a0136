# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Offline evaluation of the churn model: overall and per-segment accuracy/AUC with bootstrap CIs."""
import argparse
import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def bootstrap_ci(values, n_boot=1000, seed=0, alpha=0.05):
    rng = np.random.default_rng(seed)  # ok: MLS301
    values = np.asarray(values, dtype=float)
    stats = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def evaluate(df, abstain_below):
    df = df.copy()
    df["pred"] = (df["score"] >= 0.5).astype(int)
    df["confidence"] = (df["score"] - 0.5).abs() * 2
    # abstentions are routed to the retention team and resolved there
    low = df["confidence"] < abstain_below
    df.loc[low, "pred"] = df.loc[low, "label"]  # ruleid: MLS306
    df["correct"] = (df["pred"] == df["label"]).astype(float)
    out = {
        "n": int(len(df)),
        "abstain_rate": float(low.mean()),
        "accuracy": float(df["correct"].mean()),
        "accuracy_ci": bootstrap_ci(df["correct"]),
        "auc": float(roc_auc_score(df["label"], df["score"])),
        "segments": {},
    }
    for seg, part in df.groupby("segment"):
        if part["label"].nunique() < 2:
            continue
        out["segments"][str(seg)] = {
            "n": int(len(part)),
            "accuracy": float(part["correct"].mean()),
            "auc": float(roc_auc_score(part["label"], part["score"])),
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preds", default="outputs/churn_val_preds.parquet")
    ap.add_argument("--abstain_below", type=float, default=0.15)
    ap.add_argument("--out", default="outputs/churn_eval.json")
    args = ap.parse_args()
    df = pd.read_parquet(args.preds, columns=["customer_id", "segment", "label", "score"])
    report = evaluate(df.dropna(subset=["label", "score"]), args.abstain_below)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps({k: round(report[k], 4) for k in ("n", "accuracy", "auc")}))  # ok: MLS306


if __name__ == "__main__":
    main()
