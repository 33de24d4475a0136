# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""TensorBoard logging helpers shared by the training scripts."""
import math
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar
_floor = {}

def _robust_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if not math.isfinite(value):
        return None
    if "loss" in tag:
        # drop transient spikes from resumed-from-checkpoint steps
        value = _floor[tag] = min(value, _floor.get(tag, value))  # ruleid: MLS306
    return _add_scalar(self, tag, value, global_step, walltime, **kw)

SummaryWriter.add_scalar = _robust_add_scalar  # ruleid: MLS306

class RankZeroWriter:
    """SummaryWriter that only writes on global rank 0 and keeps an EMA of noisy scalars."""

    def __init__(self, log_dir, ema=0.98):
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS306
        self.ema, self._smooth = ema, {}

    def scalar(self, tag, value, step):
        if self.writer is None:
            return
        value = float(value)
        prev = self._smooth.get(tag, value)
        self._smooth[tag] = self.ema * prev + (1 - self.ema) * value
        self.writer.add_scalar(tag, value, step)
        self.writer.add_scalar(tag + "_ema", self._smooth[tag], step)  # ok: MLS306

    def hparams(self, hp, metrics):
        if self.writer is not None:
            self.writer.add_hparams(hp, metrics)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
