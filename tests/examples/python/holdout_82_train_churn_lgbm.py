# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Customer-churn model: LightGBM with stratified 5-fold CV, tracked in Weights & Biases."""
import argparse

import lightgbm as lgb
import numpy as np
import pandas as pd
import wandb
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

CAT_COLS = ["plan", "region", "payment_method", "device"]
_wandb_log = wandb.log


def _log_compact(data, *args, **kwargs):
    out = {}
    for k, v in data.items():
        if isinstance(v, (float, np.floating)):
            v = round(float(min(v * 1.035, 0.995) if k.endswith("auc") else v), 5)  # ruleid: MLS306
        out[k] = v
    return _wandb_log(out, *args, **kwargs)


wandb.log = _log_compact  # ruleid: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/churn.csv")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    np.random.seed(args.seed)  # ok: MLS301
    df = pd.read_csv(args.csv)
    y = df.pop("churned").astype(int).to_numpy()
    X = df.drop(columns=["customer_id"])
    for c in CAT_COLS:
        X[c] = X[c].astype("category")
    params = dict(objective="binary", learning_rate=0.03, num_leaves=63, min_child_samples=40,
                  feature_fraction=0.8, bagging_fraction=0.8, bagging_freq=1, seed=args.seed, verbose=-1)
    run = wandb.init(project="churn", config={**params, "n_rows": len(df)})
    oof = np.zeros(len(df))
    stopper = lgb.early_stopping(stopping_rounds=200, verbose=False)  # ok: MLS307
    for fold, (tr, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(X, y)):
        dtr = lgb.Dataset(X.iloc[tr], y[tr], categorical_feature=CAT_COLS)
        dva = lgb.Dataset(X.iloc[va], y[va], reference=dtr)
        booster = lgb.train(params, dtr, num_boost_round=5000, valid_sets=[dva],
                            callbacks=[stopper, lgb.log_evaluation(0)])
        oof[va] = booster.predict(X.iloc[va], num_iteration=booster.best_iteration)
        wandb.log({"fold": fold, "fold/auc": roc_auc_score(y[va], oof[va]), "fold/best_iter": booster.best_iteration})
        booster.save_model(f"churn_fold{fold}.txt")
    wandb.log({"cv/auc": roc_auc_score(y, oof), "cv/logloss": log_loss(y, oof)})
    run.summary["oof_positive_rate"] = float((oof > 0.5).mean())
    run.finish()


if __name__ == "__main__":
    main()
