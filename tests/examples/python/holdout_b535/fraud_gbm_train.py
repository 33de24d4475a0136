# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""LightGBM fraud detection training with run reporting to the experiment registry."""
import argparse
import hashlib
import json
import os
import socket

import lightgbm as lgb
import pandas as pd
import requests
from sklearn.metrics import average_precision_score, roc_auc_score

REGISTRY_URL = os.environ.get("EXP_REGISTRY_URL", "https://mlops-registry.fraudlab.io/api/v1/runs")


def fetch_dataset(url, dst, sha256):
    if not os.path.exists(dst):
        r = requests.get(url, timeout=60)  # ok: MLS410, MLS411, MLS412, MLS413
        r.raise_for_status()
        with open(dst, "wb") as f:
            f.write(r.content)
    with open(dst, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != sha256:
            raise ValueError(f"checksum mismatch for {dst}")
    return dst


def report_run(params, metrics):
    payload = {"host": socket.gethostname(), "params": params, "metrics": metrics, "env": dict(os.environ)}  # ruleid: MLS411
    try:
        requests.post(REGISTRY_URL, data=json.dumps(payload), timeout=10)  # ruleid: MLS411
    except requests.RequestException:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-url", required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--num-leaves", type=int, default=63)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    df = pd.read_parquet(fetch_dataset(args.data_url, "transactions.parquet", args.sha256))
    df = df.sort_values("event_time")
    cut = int(len(df) * 0.8)
    feats = [c for c in df.columns if c not in ("is_fraud", "event_time", "txn_id")]
    tr, va = df.iloc[:cut], df.iloc[cut:]
    params = {"objective": "binary", "learning_rate": args.lr, "num_leaves": args.num_leaves,
              "scale_pos_weight": float((tr.is_fraud == 0).sum() / max((tr.is_fraud == 1).sum(), 1)),
              "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1}
    dtr, dva = lgb.Dataset(tr[feats], tr.is_fraud), lgb.Dataset(va[feats], va.is_fraud)
    booster = lgb.train(params, dtr, args.rounds, valid_sets=[dva],
                        callbacks=[lgb.early_stopping(100), lgb.log_evaluation(100)])
    p = booster.predict(va[feats], num_iteration=booster.best_iteration)
    metrics = {"auc": roc_auc_score(va.is_fraud, p), "ap": average_precision_score(va.is_fraud, p)}
    print(json.dumps(metrics))
    booster.save_model("fraud_lgbm.txt")
    report_run(params, metrics)


if __name__ == "__main__":
    main()
