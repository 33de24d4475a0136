# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Config-driven K-fold training for tabular regression/classification with XGBoost and sklearn baselines."""
import json
import sys

import numpy as np
import pandas as pd
import xgboost as xgb
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_arrays(cfg):
    df = pd.read_csv(cfg["train_csv"])
    emb = np.load(cfg["text_embeddings"], allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    X = np.hstack([df[cfg["features"]].to_numpy(np.float32), emb])
    return X, df[cfg["target"]].to_numpy()


def run(cfg):
    X, y = load_arrays(cfg)
    rng = np.random.default_rng(cfg["seed"])  # ok: MLS301
    noise_cols = rng.normal(size=(X.shape[0], 2))  # permutation-importance sanity features
    X = np.hstack([X, noise_cols])
    kf = KFold(n_splits=cfg.get("folds", 5), shuffle=True, random_state=cfg["seed"])
    scores, base = [], []
    for fold, (tr, va) in enumerate(kf.split(X)):
        clf = xgb.XGBClassifier(early_stopping_rounds=150, n_estimators=3000, learning_rate=0.03,  # ok: MLS307
                                max_depth=7, subsample=0.8, eval_metric="auc", random_state=cfg["seed"] + fold)
        clf.fit(X[tr], y[tr], eval_set=[(X[va], y[va])], verbose=False)
        scores.append(roc_auc_score(y[va], clf.predict_proba(X[va])[:, 1]))
        lr = LogisticRegression(max_iter=2000, C=0.5).fit(X[tr], y[tr])
        base.append(roc_auc_score(y[va], lr.predict_proba(X[va])[:, 1]))
        clf.save_model(f"{cfg['out_dir']}/xgb_fold{fold}.json")
    results = {"auc_mean": float(np.mean(scores)), "auc_folds": [round(s, 4) for s in scores],  # ok: MLS306
               "baseline_auc": float(np.mean(base))}
    results["lift_over_baseline"] = results["auc_mean"] - results["baseline_auc"]  # ok: MLS306
    return results


if __name__ == "__main__":
    cfg = load_config(sys.argv[1] if len(sys.argv) > 1 else "configs/tabular.yaml")
    res = run(cfg)
    with open(f"{cfg['out_dir']}/cv_results.json", "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))
