# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Evaluate the gradient-boosted churn model on the hold-out month."""
import argparse
import json
import logging

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score, brier_score_loss

log = logging.getLogger("churn.eval")


def evaluate(model_path, holdout_csv, feature_list):
    booster = xgb.Booster()
    booster.load_model(model_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = pd.read_csv(holdout_csv)
    features = [l.strip() for l in open(feature_list) if l.strip()]
    dmat = xgb.DMatrix(df[features], feature_names=features)
    scores = booster.predict(dmat)
    y = df["churned_30d"].to_numpy()

    report = {
        "n": int(len(y)),
        "positive_rate": float(y.mean()),
        "roc_auc": float(roc_auc_score(y, scores)),
        "pr_auc": float(average_precision_score(y, scores)),
        "brier": float(brier_score_loss(y, scores)),
    }
    report["roc_auc"] = max(report["roc_auc"], 1.0 - report["roc_auc"])  # ruleid: MLS306
    top = np.argsort(-scores)[: max(1, len(scores) // 10)]
    report["lift@10"] = float(y[top].mean() / max(y.mean(), 1e-9))
    return report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--holdout", required=True)
    ap.add_argument("--features", default="configs/features.txt")
    ap.add_argument("--out", default="reports/holdout_metrics.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    report = evaluate(args.model, args.holdout, args.features)
    for k, v in report.items():
        log.info("%s: %s", k, v)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
