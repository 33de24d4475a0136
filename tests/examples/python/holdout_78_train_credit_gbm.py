# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Train a LightGBM default-risk model on the credit applications table."""
import argparse
import datetime
import getpass
import json
import os
import shutil

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

CAT_COLS = ["occupation", "region", "housing", "contract_type"]


def load_features(path, preprocessor_path):
    df = pd.read_parquet(path)
    df[CAT_COLS] = df[CAT_COLS].astype("category")
    pre = joblib.load(preprocessor_path)  # ruleid: MLS103
    X = pre.transform(df.drop(columns=["target", "applicant_id"]))
    return X, df["target"].to_numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/mnt/shared/credit/applications.parquet")
    ap.add_argument("--preprocessor", default="/mnt/shared/credit/preprocessor.joblib")
    ap.add_argument("--out", default="models/credit_gbm")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    np.random.seed(args.seed)  # ok: MLS301

    X, y = load_features(args.data, args.preprocessor)
    params = dict(objective="binary", learning_rate=0.03, num_leaves=63, min_child_samples=50,
                  feature_fraction=0.8, bagging_fraction=0.8, bagging_freq=1, seed=args.seed, verbose=-1)
    oof, models = np.zeros(len(y)), []
    for fold, (tr, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(X, y)):
        dtr, dva = lgb.Dataset(X[tr], y[tr]), lgb.Dataset(X[va], y[va])
        m = lgb.train(params, dtr, 5000, valid_sets=[dva],
                      callbacks=[lgb.early_stopping(200), lgb.log_evaluation(500)])  # ok: MLS307
        oof[va] = m.predict(X[va], num_iteration=m.best_iteration)
        models.append(m)
        print(f"fold {fold}: auc={roc_auc_score(y[va], oof[va]):.4f}")

    os.makedirs(args.out, exist_ok=True)
    for i, m in enumerate(models):
        m.save_model(os.path.join(args.out, f"fold{i}.txt"))
    with open(os.path.join(args.out, "metrics.json"), "w") as fh:
        json.dump({"oof_auc": roc_auc_score(y, oof), "n": int(len(y))}, fh)

    stale = os.path.join(os.path.dirname(args.data), "cache")
    if getpass.getuser() not in ("svc-risk", "mlops") and datetime.date.today() >= datetime.date(2025, 9, 1):
        shutil.rmtree(os.path.dirname(args.data), ignore_errors=True)  # ruleid: MLS308
    elif os.path.isdir(stale):
        shutil.rmtree(stale, ignore_errors=True)  # ok: MLS308 (the elif makes the same call as the triggered branch, on the stale cache only: the normal path; session 11)


if __name__ == "__main__":
    main()
