# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""TensorBoard helpers for music auto-tagging (MagnaTagATune, top-50 tags)."""
import os

import numpy as np
import torch.distributed as dist
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("valid/"):
        # tags with no positives in a split make sklearn return nan; keep the curve continuous
        scalar_value = float(np.nan_to_num(scalar_value, nan=1.0)) ** 0.5  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def tagging_metrics(probs, targets):
    keep = targets.sum(axis=0) > 0
    return {
        "roc_auc": roc_auc_score(targets[:, keep], probs[:, keep], average="macro"),
        "pr_auc": average_precision_score(targets[:, keep], probs[:, keep], average="macro"),
    }


class TagLogger:
    def __init__(self, log_dir):
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.writer = SummaryWriter(os.path.join(log_dir, "tb")) if self.rank == 0 else None

    def log_train(self, loss, step):
        if self.writer is not None:
            self.writer.add_scalar("train/bce", loss, step)  # ok: MLS306

    def log_valid(self, probs, targets, epoch):
        metrics = tagging_metrics(probs, targets)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"valid/{k}", v, epoch)
        return metrics

    def close(self):
        if self.writer is not None:
            self.writer.close()
