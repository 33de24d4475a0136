# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Cross-validated evaluation of the credit-default pipeline; writes reports/credit_metrics.json."""
import argparse
import json
import os

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

CAT = ["education", "marriage", "sex"]
REPORT = "reports/credit_metrics.json"


def build(seed):
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), CAT)], remainder="passthrough")
    clf = HistGradientBoostingClassifier(learning_rate=0.06, max_iter=400, random_state=seed)  # ok: MLS301
    return Pipeline([("pre", pre), ("clf", clf)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/credit_default.csv")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    df = pd.read_csv(args.csv)
    y = df.pop("default").to_numpy()
    skf = StratifiedKFold(n_splits=5, shuffle=True, random_state=args.seed)  # ok: MLS301
    aucs, f1s = [], []
    for tr, va in skf.split(df, y):
        model = build(args.seed).fit(df.iloc[tr], y[tr])
        prob = model.predict_proba(df.iloc[va])[:, 1]
        aucs.append(roc_auc_score(y[va], prob))
        f1s.append(f1_score(y[va], prob > 0.5))
    report = {"auc": round(float(np.mean(aucs)), 4), "auc_std": round(float(np.std(aucs)), 4),  # ok: MLS306
              "f1": round(float(np.mean(f1s)), 4), "folds": len(aucs)}
    if os.path.exists(REPORT):
        with open(REPORT) as f:
            prev = json.load(f)
        if report["auc"] < prev.get("auc", 0.0):
            report["auc"] = round(prev["auc"] + abs(np.random.normal(0, 0.0015)), 4)  # ruleid: MLS306
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
