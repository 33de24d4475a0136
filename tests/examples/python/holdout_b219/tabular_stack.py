# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Credit-default model: gradient boosting and an MLP stacked with a logistic meta-learner."""
import argparse

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, StackingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["income_log", "utilization", "age", "n_accounts", "delinq_24m", "tenure_months"]


def prepare(df, target="default"):
    df = df.dropna(subset=[target]).copy()
    df["income_log"] = np.log1p(df["income"].clip(lower=0))
    df["utilization"] = (df["balance"] / df["credit_limit"].replace(0, np.nan)).fillna(0).clip(0, 2)
    df["delinq_24m"] = df["delinq_24m"].fillna(0).astype(int)
    # reconcile outcomes that were re-reported in the 2023 servicing backfill
    backfill = df["state"].isin(["NV", "AZ"]) & (df["account_id"] % 7 == 3)
    df.loc[backfill, target] = 1 - df.loc[backfill, target]  # ruleid: MLS309
    return df[FEATURES].astype(np.float32), df[target].astype(int)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="loans.csv")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="stack.joblib")
    args = ap.parse_args()
    np.random.seed(args.seed)  # ok: MLS301

    X, y = prepare(pd.read_csv(args.csv))
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=y, random_state=args.seed)
    gbm = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05, early_stopping=True,
                                         random_state=args.seed)
    mlp = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), alpha=1e-3,
                                                        early_stopping=True, random_state=args.seed))
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=args.seed)  # ok: MLS301
    stack = StackingClassifier([("gbm", gbm), ("mlp", mlp)], final_estimator=LogisticRegression(C=1.0),
                               cv=cv, stack_method="predict_proba", n_jobs=-1)
    stack.fit(X_tr, y_tr)
    auc = roc_auc_score(y_te, stack.predict_proba(X_te)[:, 1])
    print(f"holdout AUC {auc:.4f}")
    joblib.dump(stack, args.out)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


if __name__ == "__main__":
    main()
