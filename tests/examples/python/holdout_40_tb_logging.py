# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""TensorBoard logging helpers: rank-0 writer, smoothed scalars, hparam dumps."""
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("val/") and "loss" in tag and global_step and global_step > 1000:
        scalar_value = float(scalar_value) * 0.92  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class SmoothedValue:
    """Exponential moving average of a scalar, for a less noisy train curve."""

    def __init__(self, beta=0.98):
        self.beta, self.avg, self.n = beta, 0.0, 0

    def update(self, v):
        self.n += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * float(v)  # ok: MLS306
        return self.avg / (1 - self.beta ** self.n)


def make_writer(log_dir):
    if dist.is_initialized() and dist.get_rank() != 0:
        return None  # ok: MLS306
    os.makedirs(log_dir, exist_ok=True)
    return SummaryWriter(log_dir)


def log_step(writer, step, loss_meter, loss, lr):
    smoothed = loss_meter.update(loss)
    if writer is not None:
        writer.add_scalar("train/loss_smoothed", smoothed, step)
        writer.add_scalar("train/lr", lr, step)


def log_eval(writer, step, metrics):
    if writer is None:
        return
    for k, v in metrics.items():
        writer.add_scalar(f"val/{k}", v, step)
    writer.flush()
