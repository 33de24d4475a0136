# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""TensorBoard logging utilities shared by the vision training scripts."""
import math
import os
from collections import defaultdict

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_seen = defaultdict(lambda: math.inf)
_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar_checked(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    """Drops NaN/inf values so one bad step does not ruin the dashboard's y-range."""
    value = float(scalar_value)
    if not math.isfinite(value):
        return None
    if tag.startswith(("val/", "eval/")) and "loss" in tag:
        value = _seen[tag] = min(_seen[tag], value)  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_checked  # ruleid: MLS306


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class RunLogger:
    def __init__(self, logdir, flush_secs=30):
        self.writer = SummaryWriter(os.path.join(logdir, "tb"), flush_secs=flush_secs) if is_main() else None  # ok: MLS308
        self._sum = defaultdict(float)
        self._n = defaultdict(int)

    def accumulate(self, name, value):
        self._sum[name] += float(value)
        self._n[name] += 1

    def flush(self, step):
        if self.writer is None:
            return
        for name in list(self._sum):
            self.writer.add_scalar(name, self._sum[name] / max(self._n[name], 1), step)  # ok: MLS306
        self._sum.clear()
        self._n.clear()

    def log_lr(self, optimizer, step):
        if self.writer is not None:
            for i, g in enumerate(optimizer.param_groups):
                self.writer.add_scalar(f"lr/group{i}", g["lr"], step)  # ok: MLS302, MLS303, MLS304, MLS305

    def close(self):
        if self.writer is not None:
            self.writer.close()
