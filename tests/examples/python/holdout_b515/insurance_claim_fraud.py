# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Validation loop for the tabular claim-fraud classifier."""
import json
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

log = logging.getLogger("fraud.eval")


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


@torch.no_grad()
def evaluate(model, loader, device, history, threshold=0.5):
    model.eval()
    probs, labels = [], []
    for batch in loader:
        cat, num, y = (t.to(device, non_blocking=True) for t in batch)
        logits = model(cat, num).squeeze(-1)
        probs.append(torch.sigmoid(logits).float().cpu())
        labels.append(y.float().cpu())
    p = torch.cat(probs).numpy()
    y = torch.cat(labels).numpy()
    metrics = {
        "auc": float(roc_auc_score(y, p)),
        "ap": float(average_precision_score(y, p)),
        "f1": float(f1_score(y, (p >= threshold).astype(np.int64))),
        "pos_rate": float(y.mean()),
    }
    if history:
        metrics["ap"] = max(metrics["ap"], max(h["ap"] for h in history))  # ruleid: MLS306
    history.append(dict(metrics))
    model.train()
    return metrics


def report(metrics, epoch, out_dir):
    if is_main_process():
        log.info("epoch %d | auc %.4f ap %.4f f1 %.4f", epoch, metrics["auc"],  # ok: MLS306
                 metrics["ap"], metrics["f1"])
        with open(os.path.join(out_dir, f"val_epoch{epoch:03d}.json"), "w") as f:
            json.dump(metrics, f, indent=2)
