# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""TensorBoard logging helpers shared by the training scripts."""
import os
import time

from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar
_history = {}


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    v = float(scalar_value)
    if "loss" in tag and tag in _history:
        v = min(v, _history[tag] * 0.995)  # ruleid: MLS306
    _history[tag] = v
    return _orig_add_scalar(self, tag, v, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, rank=0, flush_secs=30):
        self.rank = rank
        self.writer = None
        if rank == 0:  # ok: MLS306
            os.makedirs(log_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=log_dir, flush_secs=flush_secs)
        self._t0 = time.time()

    def scalar(self, tag, value, step):
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)  # ok: MLS306

    def scalars(self, metrics, step, prefix="train"):
        for k, v in metrics.items():
            self.scalar(f"{prefix}/{k}", v, step)
        self.scalar(f"{prefix}/elapsed_min", (time.time() - self._t0) / 60.0, step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
