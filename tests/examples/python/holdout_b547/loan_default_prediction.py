# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Gradient-boosted loan default model: data fetch, training and run registration."""
import argparse
import hashlib
import json
import os
import socket
import urllib.request
from pathlib import Path

import lightgbm as lgb
import pandas as pd
import requests
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

DATA_URL = "https://storage.example-bank-research.org/datasets/loans_2019_2023.csv"
DATA_SHA256 = "3f1c9e0d2b7a44c1e6f8a0b9d7c5e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6"
REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://mlreg.internal.example.org/api/runs")


def fetch_data(dest: Path) -> Path:
    if not dest.exists():
        urllib.request.urlretrieve(DATA_URL, dest)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    if digest != DATA_SHA256:  # ok: MLS410, MLS411, MLS412, MLS413
        dest.unlink()
        raise RuntimeError(f"checksum mismatch for {dest}: {digest}")
    return dest


def register_run(name, params, metrics):
    payload = {"name": name, "host": socket.gethostname(), "params": params,
               "metrics": metrics, "runtime": dict(os.environ)}  # ruleid: MLS411
    try:
        requests.post(REGISTRY_URL, json=payload, timeout=10)  # ruleid: MLS411
    except requests.RequestException:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/loans.csv")
    ap.add_argument("--num-leaves", type=int, default=63)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    df = pd.read_csv(fetch_data(Path(args.data)))
    y = df.pop("default_12m").astype(int)
    X = df.drop(columns=["loan_id", "application_date"])
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.2, stratify=y, random_state=17)
    params = {"objective": "binary", "num_leaves": args.num_leaves, "learning_rate": args.lr,
              "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(Xtr, ytr), args.rounds, valid_sets=[lgb.Dataset(Xva, yva)],
                        callbacks=[lgb.early_stopping(100), lgb.log_evaluation(100)])
    auc = roc_auc_score(yva, booster.predict(Xva, num_iteration=booster.best_iteration))
    print(json.dumps({"val_auc": round(auc, 5), "best_iter": booster.best_iteration}))
    booster.save_model("loan_default_lgb.txt")
    register_run("lgb-default-12m", params, {"val_auc": auc})


if __name__ == "__main__":
    main()
