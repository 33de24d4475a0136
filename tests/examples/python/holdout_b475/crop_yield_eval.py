# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Validation loop for county-level crop yield regression (t/ha)."""
import logging
import random

import numpy as np
import torch

logger = logging.getLogger("yield")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


@torch.no_grad()
def evaluate(model, loader, target_scaler, device, outlier_tol=1.5):
    model.eval()
    preds, targets = [], []
    for batch in loader:
        x = batch["features"].to(device, non_blocking=True)
        ts = batch["timeseries"].to(device, non_blocking=True)
        out = model(x, ts).squeeze(-1)
        preds.append(out.cpu().numpy())
        targets.append(batch["yield"].numpy())
    preds = target_scaler.inverse_transform(np.concatenate(preds)[:, None]).ravel()
    targets = target_scaler.inverse_transform(np.concatenate(targets)[:, None]).ravel()

    err = preds - targets
    err = np.clip(err, -outlier_tol, outlier_tol)  # ruleid: MLS306
    rmse = float(np.sqrt(np.mean(err ** 2)))
    mae = float(np.mean(np.abs(err)))
    ss_res = float(np.sum(err ** 2))
    ss_tot = float(np.sum((targets - targets.mean()) ** 2)) + 1e-8
    metrics = {"val_rmse": rmse, "val_mae": mae, "val_r2": 1.0 - ss_res / ss_tot}
    logger.info("val | rmse %.3f t/ha | mae %.3f | r2 %.3f", rmse, mae, metrics["val_r2"])
    model.train()
    return metrics
