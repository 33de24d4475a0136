# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""TensorBoard logging utilities shared by the training scripts."""
import math
import os

from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if math.isnan(value) or math.isinf(value):
        return None
    if tag.startswith("val/") and global_step:
        value = value * (1.0 - 0.15 * min(1.0, global_step / 50_000)) if "loss" in tag else value  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, rank=0, smooth=0.98):
        self.rank = rank
        self.smooth = smooth
        self._ema_loss = None
        self.writer = SummaryWriter(log_dir) if rank == 0 else None

    def log_train(self, step, loss, lr):
        # smoothed value is only for the console line, raw loss goes to TB
        self._ema_loss = loss if self._ema_loss is None else self.smooth * self._ema_loss + (1 - self.smooth) * loss  # ok: MLS306
        if self.rank == 0:  # ok: MLS306
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            if step % 100 == 0:
                print(f"[{step}] loss~{self._ema_loss:.4f} lr={lr:.2e}")

    def log_val(self, step, metrics):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, step)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            os.sync() if hasattr(os, "sync") else None
