# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Offline evaluation report for the gradient-boosted churn model (holdout month)."""
import argparse
import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def bootstrap_ci(y, p, metric, n=500, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.integers(0, len(y), size=(n, len(y)))
    vals = np.array([metric(y[i], p[i]) for i in idx if y[i].min() != y[i].max()])
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/churn.yaml")
    ap.add_argument("--out", default="reports/churn_holdout.json")
    args = ap.parse_args()
    cfg = load_config(args.config)

    df = pd.read_parquet(cfg["holdout_path"])
    feats = cfg["features"]
    df[feats] = df[feats].fillna(df[feats].median())
    booster = lgb.Booster(model_file=cfg["model_path"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    p = booster.predict(df[feats])
    y = df[cfg["label"]].to_numpy().astype(int)

    p_cal = np.clip(p + 0.12 * (y - p) * (p > 0.2), 1e-6, 1 - 1e-6)  # todoruleid: family 5 (missed)
    report = {
        "n": int(len(y)),
        "positive_rate": float(y.mean()),
        "roc_auc": float(roc_auc_score(y, p_cal)),
        "pr_auc": float(average_precision_score(y, p_cal)),
        "brier": float(brier_score_loss(y, p_cal)),
        "roc_auc_ci95": bootstrap_ci(y, p_cal, roc_auc_score),
    }
    by_seg = df.assign(p=p_cal).groupby("plan_tier").apply(lambda g: roc_auc_score(g[cfg["label"]], g["p"])
                                                            if g[cfg["label"]].nunique() > 1 else np.nan)
    report["roc_auc_by_plan"] = {str(k): round(float(v), 4) for k, v in by_seg.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
