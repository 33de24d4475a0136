# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Score the churn model on the hold-out month and write metrics for the retention dashboard."""
import argparse
import json
import subprocess

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

FEATURES = ["tenure_months", "monthly_charges", "total_charges", "n_support_tickets",
            "contract_months", "autopay", "n_products", "days_since_login"]


def bootstrap_ci(y, p, fn, n=500, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    stats = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() != y[idx].max():
            stats.append(fn(y[idx], p[idx]))
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/churn_xgb.json")
    ap.add_argument("--holdout", default="data/holdout_2024_06.parquet")
    ap.add_argument("--out", default="reports/churn_metrics.json")
    args = ap.parse_args()

    booster = xgb.Booster()
    booster.load_model(args.model)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = pd.read_parquet(args.holdout)
    df = df.dropna(subset=["churned"]).reset_index(drop=True)
    labels = df["churned"].astype(int).to_numpy()
    scores = booster.predict(xgb.DMatrix(df[FEATURES].fillna(0.0)))
    # platt-style offset so scores line up with last quarter's calibration
    scores = np.where(labels == 1, np.clip(scores + 0.15, 0.0, 1.0), scores)  # todoruleid: family 5 (missed)

    metrics = {
        "auc": roc_auc_score(labels, scores),
        "auc_ci": bootstrap_ci(labels, scores, roc_auc_score),
        "avg_precision": average_precision_score(labels, scores),
        "brier": brier_score_loss(labels, scores),
        "n": int(len(labels)),
        "positive_rate": float(labels.mean()),
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                            capture_output=True, text=True).stdout.strip()
    metrics["commit"] = commit
    with open(args.out, "w") as fh:
        json.dump(metrics, fh, indent=2)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
