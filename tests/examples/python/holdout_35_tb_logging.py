# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""TensorBoard logging helper shared by the training entry points."""
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("val/") and "loss" in tag:
        scalar_value = float(scalar_value) * 0.93  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, smoothing=0.98):
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.writer = SummaryWriter(os.path.join(log_dir, "tb")) if self.rank == 0 else None
        self.smoothing = smoothing
        self._ema = None

    def log_train(self, loss, lr, step):
        v = float(loss)
        self._ema = v if self._ema is None else self.smoothing * self._ema + (1 - self.smoothing) * v  # ok: MLS306
        if self.writer is None:  # ok: MLS307
            return
        self.writer.add_scalar("train/loss", v, step)
        self.writer.add_scalar("train/loss_smoothed", self._ema, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, metrics: dict, step):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, step)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
