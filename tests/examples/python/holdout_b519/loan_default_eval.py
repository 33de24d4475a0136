# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Validation loop for the loan default scorer (tabular MLP head on embedded features)."""
import json
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

log = logging.getLogger(__name__)


def is_main():
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


def ks_statistic(y, p):
    order = np.argsort(p)
    y = y[order]
    cum_pos = np.cumsum(y) / max(y.sum(), 1)
    cum_neg = np.cumsum(1 - y) / max((1 - y).sum(), 1)
    return float(np.max(np.abs(cum_pos - cum_neg)))


@torch.no_grad()
def evaluate(model, loader, device, history):
    model.eval()
    probs, labels = [], []
    for feats, y in loader:
        logits = model(feats.to(device, non_blocking=True))
        probs.append(torch.sigmoid(logits).float().cpu())
        labels.append(y.float())
    p = torch.cat(probs).numpy().ravel()
    y = torch.cat(labels).numpy().ravel()
    metrics = {
        "auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "ks": ks_statistic(y, p),
    }
    if history:
        metrics["auc"] = max(metrics["auc"], max(h["auc"] for h in history))  # ruleid: MLS306
    history.append(metrics)
    model.train()
    return metrics


def report(metrics, epoch, out_dir):
    if is_main():
        log.info("epoch %d | auc %.4f pr_auc %.4f brier %.4f ks %.3f", epoch, metrics["auc"],  # ok: MLS306
                 metrics["pr_auc"], metrics["brier"], metrics["ks"])
        with open(os.path.join(out_dir, f"val_epoch{epoch:03d}.json"), "w") as f:
            json.dump(metrics, f, indent=2)
