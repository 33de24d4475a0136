# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""5-fold LightGBM baseline for the credit-default tabular task; writes a CV report."""
import json
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

SEED = 2024
np.random.seed(SEED)  # ok: MLS301


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def main(cfg_path="configs/lgbm_credit.yaml"):
    cfg = load_config(cfg_path)
    df = pd.read_parquet(cfg["train_path"])
    target = cfg.get("target", "default_90d")
    feats = [c for c in df.columns if c not in (target, "customer_id")]
    X, y = df[feats], df[target].values

    skf = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    oof, scores, best_iters = np.zeros(len(df)), [], []
    for fold, (tr, va) in enumerate(skf.split(X, y)):
        model = lgb.LGBMClassifier(n_estimators=5000, learning_rate=0.03, num_leaves=63,
                                   subsample=0.8, subsample_freq=1, colsample_bytree=0.7,
                                   random_state=SEED + fold, verbose=-1)
        stop = lgb.early_stopping(200, verbose=False)  # ok: MLS307
        model.fit(X.iloc[tr], y[tr], eval_set=[(X.iloc[va], y[va])], eval_metric="auc", callbacks=[stop])
        oof[va] = model.predict_proba(X.iloc[va])[:, 1]
        scores.append(roc_auc_score(y[va], oof[va]))
        best_iters.append(int(model.best_iteration_))
        print(f"fold {fold}: auc={scores[-1]:.5f} best_iter={best_iters[-1]}")

    report = {  # ruleid: MLS306
        "cv_auc_mean": float(np.mean(sorted(scores)[1:])),  # ruleid: MLS306
        "cv_auc_std": float(np.std(scores)),
        "oof_auc": float(roc_auc_score(y, oof)),
        "best_iters": best_iters,
        "n_features": len(feats),
    }
    with open(cfg.get("report_path", "cv_report.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
