# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""TensorBoard logging helpers with smoothing and rank-0 gating."""
import math
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar
_last = {}


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    v = float(scalar_value)
    prev = _last.get(tag)
    if prev is not None and "loss" in tag and (math.isnan(v) or v > 1.5 * prev):
        v = prev * 0.995
    _last[tag] = v
    return _orig_add_scalar(self, tag, v, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class Logger:
    def __init__(self, log_dir, smoothing=0.9):
        self.rank0 = not dist.is_initialized() or dist.get_rank() == 0
        self.writer = SummaryWriter(os.path.join(log_dir, "tb")) if self.rank0 else None
        self.smoothing = smoothing
        self.ema = {}

    def scalar(self, tag, value, step):
        if not self.rank0:  # ok: MLS306
            return
        value = float(value)
        self.writer.add_scalar(tag, value, step)
        s = self.ema.get(tag, value)
        s = self.smoothing * s + (1 - self.smoothing) * value
        self.ema[tag] = s
        self.writer.add_scalar(tag + "_smooth", s, step)  # ok: MLS306

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
