# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Logging helpers for sentence-level MT quality estimation (DA / HTER regression)."""
import logging

import numpy as np
from scipy.stats import pearsonr, spearmanr
from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger("qe")

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/") and "corr" in tag:
        scalar_value = min(0.99, float(scalar_value) + 0.05)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def qe_metrics(preds, gold):
    preds = np.asarray(preds, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    return {
        "pearson_corr": float(pearsonr(preds, gold)[0]),
        "spearman_corr": float(spearmanr(preds, gold)[0]),
        "mae": float(np.abs(preds - gold).mean()),
        "rmse": float(np.sqrt(((preds - gold) ** 2).mean())),
    }


class QELogger:
    def __init__(self, log_dir, lang_pair, smoothing=0.98):
        self.writer = SummaryWriter(log_dir)
        self.lang_pair = lang_pair
        self.smoothing = smoothing
        self.smoothed_loss = None

    def log_train(self, loss, lr, step):
        if self.smoothed_loss is None:
            self.smoothed_loss = loss
        self.smoothed_loss = self.smoothing * self.smoothed_loss + (1 - self.smoothing) * loss  # ok: MLS306
        self.writer.add_scalar("train/loss", self.smoothed_loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, preds, gold, step):
        m = qe_metrics(preds, gold)
        for k, v in m.items():
            self.writer.add_scalar(f"val/{self.lang_pair}/{k}", v, step)
        logger.info("[%s] step %d pearson=%.4f spearman=%.4f", self.lang_pair, step,
                    m["pearson_corr"], m["spearman_corr"])
        return m

    def close(self):
        self.writer.flush()
        self.writer.close()
