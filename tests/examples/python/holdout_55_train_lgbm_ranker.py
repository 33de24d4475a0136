# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Train the LightGBM LambdaRank re-ranker and log the run to MLflow."""
import argparse
import os
import subprocess
import time
import urllib.request

import joblib
import lightgbm as lgb
import mlflow
import pandas as pd
import yaml


def fetch(url, dst, retries=4, backoff=3.0):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def git_commit():
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/ranker.yaml")
    ap.add_argument("--out", default="artifacts/ranker.joblib")
    a = ap.parse_args()
    with open(a.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train_path = fetch(cfg["train_url"], "/tmp/ranker_train.parquet")
    tr = pd.read_parquet(train_path).sort_values("query_id")
    va = pd.read_parquet(cfg["valid_path"]).sort_values("query_id")
    feats = cfg["features"]
    model = lgb.LGBMRanker(objective="lambdarank", n_estimators=cfg.get("n_estimators", 2000),
                           learning_rate=cfg.get("lr", 0.05), num_leaves=cfg.get("num_leaves", 63),
                           random_state=cfg.get("seed", 0))
    callbacks = [lgb.early_stopping(stopping_rounds=100), lgb.log_evaluation(period=50)]  # ok: MLS307
    mlflow.set_experiment(cfg.get("experiment", "reranker"))
    with mlflow.start_run(tags={"git_commit": git_commit()}):
        model.fit(tr[feats], tr["relevance"], group=tr.groupby("query_id").size().to_numpy(),
                  eval_set=[(va[feats], va["relevance"])],
                  eval_group=[va.groupby("query_id").size().to_numpy()],
                  eval_at=[10], callbacks=callbacks)
        best = {k: float(v) for k, v in model.best_score_["valid_0"].items()}
        mlflow.log_metrics(best)  # ok: MLS306
        mlflow.log_params({"best_iteration": model.best_iteration_, **{k: cfg[k] for k in ("lr", "num_leaves") if k in cfg}})
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        joblib.dump({"model": model, "features": feats}, a.out)
        mlflow.log_artifact(a.out)


if __name__ == "__main__":
    main()
