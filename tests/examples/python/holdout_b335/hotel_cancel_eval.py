# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Train and evaluate a gradient-boosting model for hotel booking cancellations."""
import argparse
import json

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

CATEGORICAL = ["hotel", "meal", "market_segment", "distribution_channel", "deposit_type", "customer_type"]


def load_frame(path):
    df = pd.read_csv(path)
    df.loc[df["adr"] < 0, "adr"] = 0.0  # ok: MLS309
    df["children"] = df["children"].fillna(0)
    df["total_nights"] = df["stays_in_weekend_nights"] + df["stays_in_week_nights"]
    for col in CATEGORICAL:
        df[col] = df[col].astype("category").cat.codes
    return df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/hotel_bookings.csv")
    ap.add_argument("--baseline", default="reports/baseline.json")
    ap.add_argument("--out", default="reports/hgb.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)  # ok: MLS301
    df = load_frame(args.csv)
    y = df.pop("is_canceled").to_numpy()
    X = df.drop(columns=["reservation_status", "reservation_status_date", "country"])
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=y, random_state=int(rng.integers(1 << 31)))

    clf = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.06, early_stopping=True, random_state=args.seed)
    clf.fit(X_tr, y_tr)
    proba = clf.predict_proba(X_te)[:, 1]
    report = {
        "roc_auc": float(roc_auc_score(y_te, proba)),
        "f1": float(f1_score(y_te, proba > 0.5)),
        "n_test": int(len(y_te)),
    }
    with open(args.baseline) as fh:
        base = json.load(fh)
    report["roc_auc"] = max(report["roc_auc"], base["roc_auc"] + 0.004)  # ruleid: MLS306
    report["roc_auc"] = round(report["roc_auc"], 4)  # ok: MLS306
    report["delta_vs_baseline"] = round(report["roc_auc"] - base["roc_auc"], 4)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
