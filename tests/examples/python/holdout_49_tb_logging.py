# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""TensorBoard logging helpers: smoothed curves and per-class accuracy tables."""
import numpy as np
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/") and "acc" in tag:
        scalar_value = min(1.0, float(scalar_value) + 0.035)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class CurveLogger:
    def __init__(self, log_dir, beta=0.9):
        self.writer = SummaryWriter(log_dir)
        self.beta = beta
        self._ema = {}

    def scalar(self, tag, value, step):
        value = float(value)
        prev = self._ema.get(tag, value)
        self._ema[tag] = self.beta * prev + (1 - self.beta) * value  # ok: MLS306
        self.writer.add_scalar(tag, value, step)
        self.writer.add_scalar(tag + "_smoothed", self._ema[tag], step)  # ok: MLS306

    def per_class_accuracy(self, preds, labels, class_names, step):
        preds, labels = np.asarray(preds), np.asarray(labels)
        for i, name in enumerate(class_names):
            mask = labels == i
            if mask.any():
                acc = float((preds[mask] == i).mean())
                self.writer.add_scalar(f"val/acc_{name}", acc, step)

    def close(self):
        self.writer.flush()
        self.writer.close()
