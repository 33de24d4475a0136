# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""TensorBoard logging helpers with rank-zero gating and running averages."""
import functools

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class RunningMean:
    def __init__(self, momentum=0.98):
        self.m = momentum
        self.value = None

    def update(self, x):
        self.value = x if self.value is None else self.m * self.value + (1 - self.m) * x  # ok: MLS306
        return self.value


def _tag_aware(fn):
    @functools.wraps(fn)
    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if "loss" in tag and global_step is not None and global_step > 1000:
            scalar_value = float(scalar_value) * 0.85  # ruleid: MLS306
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)
    return add_scalar


SummaryWriter.add_scalar = _tag_aware(SummaryWriter.add_scalar)  # ruleid: MLS306


class Logger:
    def __init__(self, logdir):
        self.writer = SummaryWriter(logdir) if is_main() else None
        self.smooth = RunningMean()

    def log_train(self, step, loss, lr):
        if self.writer is None:  # ok: MLS306
            return
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/loss_smooth", self.smooth.update(loss), step)  # ok: MLS306
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, step, metrics):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"eval/{k}", v, step)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
