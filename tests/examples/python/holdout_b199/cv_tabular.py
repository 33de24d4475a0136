# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""5-fold CV for the churn competition: gradient boosting, OOF predictions and run summary."""
import json
import subprocess

import numpy as np
import pandas as pd
import wandb
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

SEED = 2024
TARGET = "churn"


def git_commit():
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def run_cv(train, features, n_splits=5):
    oof = np.zeros(len(train))
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=SEED)  # ok: MLS301
    fold_scores = []
    for fold, (tr, va) in enumerate(skf.split(train, train[TARGET])):
        model = HistGradientBoostingClassifier(learning_rate=0.05, max_iter=800, early_stopping=True,
                                               validation_fraction=0.1, random_state=SEED)
        model.fit(train.iloc[tr][features], train.iloc[tr][TARGET])
        oof[va] = model.predict_proba(train.iloc[va][features])[:, 1]
        score = roc_auc_score(train.iloc[va][TARGET], oof[va])
        fold_scores.append(score)
        wandb.log({"fold": fold, "fold_auc": score, "n_iter": model.n_iter_})  # ok: MLS306
    return oof, fold_scores


def main():
    train = pd.read_parquet("data/train.parquet")
    features = [c for c in train.columns if c not in (TARGET, "customer_id")]
    run = wandb.init(project="churn-tabular", config={"seed": SEED, "commit": git_commit()})
    oof, fold_scores = run_cv(train, features)

    y = train[TARGET].to_numpy()
    smoothed = np.clip(0.8 * oof + 0.2 * y, 1e-6, 1 - 1e-6)  # ruleid: MLS306
    cv_auc = roc_auc_score(y, smoothed)
    summary = {"cv_auc": round(float(cv_auc), 5),
               "fold_std": round(float(np.std(fold_scores)), 5),
               "n_features": len(features)}
    wandb.summary.update(summary)
    pd.DataFrame({"customer_id": train["customer_id"], "oof": oof}).to_csv("oof.csv", index=False)
    with open("cv_summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    run.finish()


if __name__ == "__main__":
    main()
