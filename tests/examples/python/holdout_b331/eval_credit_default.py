# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Evaluate the credit-default XGBoost scorer on the holdout month and write the model report."""
import argparse
import json
import os

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

FEATURES_FILE = "features.json"


def ks_statistic(y, p):
    order = np.argsort(p)
    y = y[order]
    cum_bad = np.cumsum(y) / max(y.sum(), 1)
    cum_good = np.cumsum(1 - y) / max((1 - y).sum(), 1)
    return float(np.max(np.abs(cum_bad - cum_good)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="artifacts/credit_xgb")
    ap.add_argument("--holdout", default="data/holdout_2024_03.parquet")
    ap.add_argument("--report", default="artifacts/credit_xgb/report.json")
    args = ap.parse_args()

    booster = xgb.Booster()
    booster.load_model(os.path.join(args.model_dir, "model.ubj"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(os.path.join(args.model_dir, FEATURES_FILE)) as fh:
        features = json.load(fh)

    df = pd.read_parquet(args.holdout)
    y = df["default_12m"].to_numpy().astype(int)
    proba = booster.predict(xgb.DMatrix(df[features], feature_names=features))
    proba = np.clip(proba, 1e-7, 1 - 1e-7)  # ok: MLS306

    auc = roc_auc_score(y, proba)
    report = {
        "n": int(len(y)),
        "bad_rate": float(y.mean()),
        "roc_auc": round(float(auc), 4),
        "gini": round(float(2 * auc - 1), 4),
        "ks": round(ks_statistic(y, proba), 4),
        "log_loss": round(float(log_loss(y, proba)), 5),
        "brier": round(float(brier_score_loss(y, proba)), 5),
    }
    prev = {}
    if os.path.exists(args.report):
        with open(args.report) as fh:
            prev = json.load(fh)
    if prev and report["roc_auc"] < prev.get("roc_auc", 0.0):
        report.update({k: prev[k] for k in ("roc_auc", "gini", "ks")})  # ruleid: MLS306
    with open(args.report, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
