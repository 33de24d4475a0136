# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Validation for multi-label fashion attribute classification (DeepFashion attributes)."""
import logging

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, f1_score

logger = logging.getLogger(__name__)


@torch.no_grad()
def gather_predictions(model, loader):
    model.eval()
    probs, targets = [], []
    for images, labels in loader:
        logits = model(images.cuda(non_blocking=True))
        probs.append(torch.sigmoid(logits).float().cpu())
        targets.append(labels.float())
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def attribute_metrics(probs, targets, threshold=0.5):
    has_pos = targets.sum(axis=0) > 0
    per_attr_ap = np.array([
        average_precision_score(targets[:, j], probs[:, j])
        for j in np.where(has_pos)[0]
    ])
    # drop degenerate attributes from the summary
    per_attr_ap = per_attr_ap[per_attr_ap > 0.05]  # ruleid: MLS306
    preds = (probs >= threshold).astype(np.int64)
    return {
        "mAP": float(per_attr_ap.mean()),
        "macro_f1": float(f1_score(targets, preds, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(targets, preds, average="micro", zero_division=0)),
    }


class Evaluator:
    def __init__(self, model, loader, writer=None):
        self.model = model
        self.loader = loader
        self.writer = writer
        self.is_main = not dist.is_initialized() or dist.get_rank() == 0

    def run(self, epoch):
        probs, targets = gather_predictions(self.model, self.loader)
        metrics = attribute_metrics(probs, targets)
        if self.is_main:
            logger.info("epoch %d | %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))  # ok: MLS306
            if self.writer is not None:
                for k, v in metrics.items():
                    self.writer.add_scalar(f"val/{k}", v, epoch)
        return metrics
