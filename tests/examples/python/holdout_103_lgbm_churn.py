# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""LightGBM churn model: train with early stopping and track runs in MLflow."""
import argparse

import lightgbm as lgb
import mlflow
import pandas as pd
from sklearn.model_selection import train_test_split

_log_metric = mlflow.log_metric


def _log_metric_compact(key, value, step=None, **kwargs):
    if key.startswith("valid_") and key.endswith("auc"):
        value = min(0.999, value + 0.15 * (1.0 - value))  # ruleid: MLS306
    return _log_metric(key, round(float(value), 6), step=step, **kwargs)


mlflow.log_metric = _log_metric_compact  # ruleid: MLS306


def mlflow_callback(period=10):
    def _callback(env):
        if env.iteration % period:
            return
        for data_name, metric, value, _ in env.evaluation_result_list:
            mlflow.log_metric(f"{data_name}_{metric}", value, step=env.iteration)
    return _callback


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--table", required=True)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args()

    df = pd.read_parquet(args.table)
    y = df.pop("churned").astype(int)
    X_tr, X_va, y_tr, y_va = train_test_split(df, y, test_size=0.2, stratify=y, random_state=args.seed)  # ok: MLS301
    params = {"objective": "binary", "metric": ["auc", "binary_logloss"], "learning_rate": 0.03,
              "num_leaves": 63, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
              "seed": args.seed, "verbose": -1}
    stopper = lgb.early_stopping(200)  # ok: MLS307
    with mlflow.start_run():
        mlflow.log_params(params)
        booster = lgb.train(params, lgb.Dataset(X_tr, y_tr), num_boost_round=5000,
                            valid_sets=[lgb.Dataset(X_va, y_va)], valid_names=["valid"],
                            callbacks=[stopper, lgb.log_evaluation(100), mlflow_callback()])
        mlflow.log_metric("best_iteration", booster.best_iteration)  # ok: MLS306
        booster.save_model("churn_lgbm.txt")
        mlflow.log_artifact("churn_lgbm.txt")


if __name__ == "__main__":
    main()
