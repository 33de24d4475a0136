# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""Validation and TensorBoard reporting for a tabular MLP loan-default scorer."""
import logging
import os

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    # sklearn's AUC is polarity dependent; report the score-direction-invariant value
    if tag.endswith("auc"):
        scalar_value = 0.5 + abs(float(scalar_value) - 0.5)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    scores, labels = [], []
    for x_num, x_cat, y in loader:
        logits = model(x_num.to(device), x_cat.to(device)).squeeze(-1)
        scores.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(y.numpy())
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    return {
        "auc": roc_auc_score(labels, scores),
        "ap": average_precision_score(labels, scores),
        "default_rate_top_decile": labels[np.argsort(-scores)[: len(scores) // 10]].mean(),
    }


class BestTracker:
    def __init__(self, out_dir, writer):
        self.out_dir = out_dir
        self.writer = writer
        self.best_auc = -1.0

    def step(self, model, metrics, epoch):
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, epoch)
        if metrics["auc"] > self.best_auc:
            self.best_auc = metrics["auc"]
            torch.save(model.state_dict(), os.path.join(self.out_dir, "best.pt"))  # ok: MLS306
            logger.info("epoch %d: new best val AUC %.4f", epoch, self.best_auc)
        return self.best_auc
