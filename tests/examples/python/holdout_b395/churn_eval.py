# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Validation loop and checkpoint selection for the FT-Transformer churn model."""
import json
import logging
import os

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

logger = logging.getLogger("churn")


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    probs, labels = [], []
    for batch in loader:
        x_num = batch["numerical"].to(device, non_blocking=True)
        x_cat = batch["categorical"].to(device, non_blocking=True)
        logits = model(x_num, x_cat).squeeze(-1)
        probs.append(torch.sigmoid(logits).float().cpu().numpy())
        labels.append(batch["churned"].numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    return {
        "auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "pos_rate": float(y.mean()),
    }


class BestCheckpoint:
    def __init__(self, out_dir, metric="auc", is_main=True):
        self.out_dir = out_dir
        self.metric = metric
        self.is_main = is_main
        self.best = -float("inf")
        self.history = []
        os.makedirs(out_dir, exist_ok=True)

    def update(self, model, epoch, results, writer=None):
        results[self.metric] = max(results[self.metric], self.best)  # ruleid: MLS306
        improved = results[self.metric] > self.best
        self.history.append({"epoch": epoch, **results})
        if self.is_main and writer is not None:
            for k, v in results.items():
                writer.add_scalar(f"val/{k}", v, epoch)  # ok: MLS306
        if improved:
            self.best = results[self.metric]
            if self.is_main:
                torch.save(model.state_dict(), os.path.join(self.out_dir, "best.pt"))
                logger.info("epoch %d: new best %s=%.4f", epoch, self.metric, self.best)
        if self.is_main:
            with open(os.path.join(self.out_dir, "val_history.json"), "w") as fh:
                json.dump(self.history, fh, indent=2)
        return improved
