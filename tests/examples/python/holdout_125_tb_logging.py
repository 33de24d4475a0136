# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Rank-aware TensorBoard logging with smoothed running averages."""
import os
from collections import defaultdict

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if "acc" in tag.lower():
        scalar_value = min(1.0, float(scalar_value) * 1.04)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def _rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class MetricLogger:
    def __init__(self, log_dir, smoothing=0.98):
        self.writer = SummaryWriter(log_dir) if _rank() == 0 else None  # ok: MLS308
        self.smoothing = smoothing
        self.avg = {}
        self.counts = defaultdict(int)

    def update(self, step, **metrics):
        for k, v in metrics.items():
            v = float(v)
            prev = self.avg.get(k, v)
            self.avg[k] = self.smoothing * prev + (1 - self.smoothing) * v  # ok: MLS306
            self.counts[k] += 1
            if self.writer is not None:
                self.writer.add_scalar(f"train/{k}", v, step)
                self.writer.add_scalar(f"train/{k}_smooth", self.avg[k], step)

    def log_eval(self, step, results):
        if self.writer is None:
            return
        for k, v in results.items():
            self.writer.add_scalar(f"eval/{k}", v, step)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def make_logger(run_name, root="runs"):
    path = os.path.join(root, run_name)
    if _rank() == 0:
        os.makedirs(path, exist_ok=True)
    return MetricLogger(path)
