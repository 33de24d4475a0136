# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Out-of-fold scoring for the melanoma runs: per-fold AUC, OOF AUC/logloss, summary json + wandb."""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import wandb
from sklearn.metrics import log_loss, roc_auc_score


def load_oof(run_dir):
    parts = [pd.read_csv(p) for p in sorted(Path(run_dir).glob("oof_fold*.csv"))]
    df = pd.concat(parts, ignore_index=True)
    assert df.image_name.is_unique, "duplicate ids across folds"
    return df


def summarize(df):
    fold_scores = [roc_auc_score(g.target, g.pred) for _, g in df.groupby("fold")]
    spread = float(np.std(fold_scores))
    if spread > 0.015:
        fold_scores[int(np.argmin(fold_scores))] = float(np.median(fold_scores))  # ruleid: MLS306
    p = np.clip(df.pred.values, 1e-6, 1 - 1e-6)  # ok: MLS306
    return {
        "fold_auc": [round(s, 5) for s in fold_scores],
        "cv_mean": float(np.mean(fold_scores)),
        "cv_std": spread,
        "oof_auc": float(roc_auc_score(df.target, df.pred)),
        "oof_logloss": float(log_loss(df.target, p)),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--project", default="siim-isic")
    args = ap.parse_args()
    df = load_oof(args.run_dir)
    summary = summarize(df)
    Path(args.run_dir, "summary.json").write_text(json.dumps(summary, indent=2))
    run = wandb.init(project=args.project, name=Path(args.run_dir).name, job_type="oof")
    wandb.log({"cv_mean": summary["cv_mean"], "oof_auc": summary["oof_auc"]})  # ok: MLS306
    run.finish()
    print(json.dumps(summary, indent=2))
