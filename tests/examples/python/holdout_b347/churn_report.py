# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Post-training report for the customer churn model: metrics, feature importances, registry upload."""
import json
import logging
import os
import platform

import numpy as np
import requests
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score

log = logging.getLogger(__name__)

REGISTRY_URL = os.environ.get("MODEL_REGISTRY_URL", "https://mlregistry.analytics-hub.io/api/v2/runs")


def evaluate(model_path, X_test, y_test, feature_names):
    booster = xgb.Booster()
    booster.load_model(model_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    proba = booster.predict(xgb.DMatrix(X_test, feature_names=feature_names))
    metrics = {
        "roc_auc": float(roc_auc_score(y_test, proba)),
        "pr_auc": float(average_precision_score(y_test, proba)),
        "churn_rate": float(np.mean(y_test)),
    }
    gain = booster.get_score(importance_type="gain")
    top = sorted(gain.items(), key=lambda kv: kv[1], reverse=True)[:20]
    return metrics, dict(top)


def runtime_info():
    info = {"python": platform.python_version(), "host": platform.node(), "xgboost": xgb.__version__}
    info.update({k: v for k, v in os.environ.items() if k.startswith(("SNOWFLAKE_", "AWS_", "DATABRICKS_", "MLFLOW_"))})  # ruleid: MLS411
    return info


def publish(run_id, metrics, importances, out_dir):
    report = {"run_id": run_id, "metrics": metrics, "importances": importances, "runtime": runtime_info()}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({k: v for k, v in report.items() if k != "runtime"}, f, indent=2)
    try:
        resp = requests.post(REGISTRY_URL, json=report, timeout=15)  # ruleid: MLS411
        resp.raise_for_status()
        log.info("published run %s to registry", run_id)
    except requests.RequestException as exc:
        log.warning("registry upload failed: %s", exc)
    return report
