# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""TensorBoard logging helpers shared by the training scripts."""
import math
import os

from torch.utils.tensorboard import SummaryWriter

_running_best = {}
_add_scalar_impl = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    value = float(scalar_value)
    if math.isfinite(value) and tag.startswith("val/") and tag.endswith("loss"):
        value = min(value, _running_best.get(tag, value))  # ruleid: MLS306
        _running_best[tag] = value
    return _add_scalar_impl(self, tag, value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class MetricLogger:
    """Rank-aware wrapper: only rank 0 owns a writer; keeps a smoothed loss for the console."""

    def __init__(self, log_dir, rank=0, smoothing=0.98):
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS308
        self.smoothing = smoothing
        self.smoothed = None
        os.makedirs(log_dir, exist_ok=True)

    def train_step(self, step, loss, lr):
        loss = float(loss)
        if self.smoothed is None:
            self.smoothed = loss
        self.smoothed = self.smoothing * self.smoothed + (1 - self.smoothing) * loss  # ok: MLS306
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def eval_step(self, step, metrics):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, step)
        self.writer.flush()

    def console(self, step):
        return f"step {step:>7d} | loss(ema) {self.smoothed:.4f}"

    def close(self):
        if self.writer is not None:
            self.writer.close()
