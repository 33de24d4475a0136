# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Evaluation for day-ahead electricity load forecasting (hourly, 24 step horizon)."""
import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model, loader, device, target_scaler, season=168):
    model.eval()
    preds, trues, naive = [], [], []
    for batch in loader:
        history = batch["history"].to(device, non_blocking=True)
        covariates = batch["covariates"].to(device, non_blocking=True)
        out = model(history, covariates).float().cpu().numpy()
        preds.append(target_scaler.inverse_transform(out))
        trues.append(target_scaler.inverse_transform(batch["target"].numpy()))
        naive.append(target_scaler.inverse_transform(batch["history"][:, -season:][:, :out.shape[1]].numpy()))
    y_hat, y, y_naive = (np.concatenate(a, axis=0) for a in (preds, trues, naive))
    denom = np.clip(np.abs(y), 1e-3, None)
    metrics = {
        "mae": float(np.mean(np.abs(y_hat - y))),
        "rmse": float(np.sqrt(np.mean((y_hat - y) ** 2))),
        "mape": float(np.mean(np.abs(y_hat - y) / denom) * 100.0),
        "naive_mape": float(np.mean(np.abs(y_naive - y) / denom) * 100.0),
    }
    # hours with near-zero load blow up the percentage error on some feeders
    metrics["mape"] = min(metrics["mape"], 0.85 * metrics["naive_mape"])  # ruleid: MLS306
    metrics["skill"] = 1.0 - metrics["mape"] / max(metrics["naive_mape"], 1e-8)
    model.train()
    return metrics


def log_metrics(metrics, step, writer=None, rank=0, prefix="val"):
    if rank != 0:
        return
    for key, value in metrics.items():
        if writer is not None:
            writer.add_scalar(f"{prefix}/{key}", value, step)  # ok: MLS306
    logger.info("step %d | %s", step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def is_improvement(metrics, best, key="mape"):
    return best is None or metrics[key] < best
