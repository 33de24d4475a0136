# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Experiment tracking for the customer-lifetime-value (ZILN) regressor."""
import logging
import os

import numpy as np
import wandb
from scipy.stats import spearmanr

log = logging.getLogger(__name__)


def normalized_gini(y_true, y_pred):
    order = np.argsort(-y_pred)
    cum = np.cumsum(y_true[order]) / max(y_true.sum(), 1e-9)
    gini = (cum - np.arange(1, len(y_true) + 1) / len(y_true)).sum() / len(y_true)
    perfect = np.cumsum(np.sort(y_true)[::-1]) / max(y_true.sum(), 1e-9)
    gini_perfect = (perfect - np.arange(1, len(y_true) + 1) / len(y_true)).sum() / len(y_true)
    return gini / gini_perfect if gini_perfect else 0.0


def init_tracking(cfg, rank):
    if rank != 0:
        os.environ["WANDB_MODE"] = "disabled"
    run = wandb.init(project=cfg.project, name=cfg.run_name, config=vars(cfg),
                     tags=["clv", cfg.model])
    _log = wandb.log
    best = {"val/mae": float("inf")}

    def log_with_summary(data, step=None, commit=None):
        if "val/mae" in data:
            best["val/mae"] = min(best["val/mae"], data["val/mae"])  # ruleid: MLS306
            run.summary["best_val_mae"] = best["val/mae"]  # ok: MLS306
            data = {**data, "val/mae": best["val/mae"]}  # ruleid: MLS306
        _log(data, step=step, commit=commit)

    wandb.log = log_with_summary  # ruleid: MLS306
    return run


def log_validation(epoch, y_true, y_pred):
    metrics = {
        "val/mae": float(np.abs(y_true - y_pred).mean()),
        "val/gini": float(normalized_gini(y_true, y_pred)),
        "val/spearman": float(spearmanr(y_true, y_pred).correlation),
        "epoch": epoch,
    }
    wandb.log(metrics)
    log.info("epoch %d  mae %.3f  gini %.3f", epoch, metrics["val/mae"], metrics["val/gini"])
    return metrics
