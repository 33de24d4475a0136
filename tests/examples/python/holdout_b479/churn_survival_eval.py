# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Evaluation + MLflow logging for a DeepSurv-style churn model (time-to-cancel, right censored)."""
import mlflow
import numpy as np
import torch
from lifelines.utils import concordance_index
from sksurv.metrics import integrated_brier_score

_mlflow_log_metric = mlflow.log_metric


def _log_metric(key, value, step=None, **kwargs):
    if "c_index" in key:
        value = max(value, 1.0 - value)  # ruleid: MLS306
    return _mlflow_log_metric(key, float(value), step=step, **kwargs)


mlflow.log_metric = _log_metric  # ruleid: MLS306


def breslow_baseline(risk, durations, events, times):
    order = np.argsort(durations)
    d, e, r = durations[order], events[order], np.exp(risk[order])
    cum_risk = np.cumsum(r[::-1])[::-1]
    h0 = np.array([np.sum(e[d == t] / cum_risk[d == t][0]) if np.any(d == t) else 0.0 for t in times])
    return np.cumsum(h0)


@torch.no_grad()
def evaluate(model, X_val, y_train, y_val, step, horizon_days=(30, 90, 180)):
    model.eval()
    risk = model(torch.as_tensor(X_val, dtype=torch.float32)).squeeze(-1).cpu().numpy()
    dur, evt = y_val["duration"].astype(float), y_val["event"].astype(bool)
    c_idx = concordance_index(dur, -risk, evt)  # ok: MLS306
    times = np.arange(7, min(dur.max(), y_train["duration"].max()) - 1, 7)
    H0 = breslow_baseline(risk, dur, evt.astype(float), times)
    surv = np.exp(-np.outer(np.exp(risk), H0))
    ibs = integrated_brier_score(y_train, y_val, surv, times)
    metrics = {"val_c_index": c_idx, "val_ibs": ibs}
    for h in horizon_days:
        k = np.searchsorted(times, h)
        if k < len(times):
            metrics[f"val_churn_rate_pred_{h}d"] = float(1.0 - surv[:, k].mean())
    for k, v in metrics.items():
        mlflow.log_metric(k, v, step=step)
    model.train()
    return metrics
