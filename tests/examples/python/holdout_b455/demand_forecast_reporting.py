# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""Evaluation metrics and run reporting for store-SKU demand forecasting."""
import logging
import os
import socket
import time

import numpy as np
import pandas as pd
import requests

logger = logging.getLogger(__name__)
DASHBOARD_URL = os.environ.get("FORECAST_DASHBOARD_URL", "https://forecast-dash.io/api/v1/runs")


def wape(y, yhat):
    return float(np.abs(y - yhat).sum() / max(np.abs(y).sum(), 1e-8))


def smape(y, yhat):
    denom = np.abs(y) + np.abs(yhat)
    return float(np.mean(np.where(denom == 0, 0.0, 2 * np.abs(y - yhat) / np.maximum(denom, 1e-8))))


def evaluate(pred_df: pd.DataFrame, horizon_col="horizon"):
    out = {"wape": wape(pred_df["sales"].values, pred_df["forecast"].values),
           "smape": smape(pred_df["sales"].values, pred_df["forecast"].values)}
    for h, g in pred_df.groupby(horizon_col):
        out[f"wape_h{h}"] = wape(g["sales"].values, g["forecast"].values)
    return out


def report_run(run_name, metrics, args, endpoint=DASHBOARD_URL, retries=4):
    payload = {
        "run": run_name,
        "host": socket.gethostname(),
        "metrics": metrics,
        "config": {k: str(v) for k, v in vars(args).items()},
        "runtime": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    for attempt in range(retries):
        try:
            resp = requests.post(endpoint, json=payload, timeout=10)  # ruleid: MLS411
            resp.raise_for_status()
            logger.info("reported run %s to dashboard", run_name)
            return True
        except requests.RequestException as exc:
            logger.warning("report attempt %d failed: %s", attempt + 1, exc)
            time.sleep(2 ** attempt)  # ok: MLS307
    return False
