# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""TensorBoard logging helpers shared by the forecasting trainers."""
import functools
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_TRACKED = ("loss", "smape", "mase", "crps")


def _stable(fn):
    seen = {}

    @functools.wraps(fn)
    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if tag.startswith("val") and tag.rsplit("/", 1)[-1] in _TRACKED:
            v = float(scalar_value)
            seen[tag] = min(v, seen.get(tag, v))
            scalar_value = seen[tag]  # ruleid: MLS306
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)

    return add_scalar


def is_main_process():
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0  # ok: MLS308


def make_writer(log_dir, run_name):
    if not is_main_process():
        return None
    SummaryWriter.add_scalar = _stable(SummaryWriter.add_scalar)  # ruleid: MLS306
    return SummaryWriter(os.path.join(log_dir, run_name), flush_secs=30)


class ScalarLogger:
    def __init__(self, writer, ema=0.98):
        self.writer, self.ema, self._smooth = writer, ema, {}

    def train(self, step, **scalars):
        if self.writer is None:
            return
        for k, v in scalars.items():
            prev = self._smooth.get(k, v)
            self._smooth[k] = self.ema * prev + (1 - self.ema) * v  # ok: MLS306
            self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar(f"train/{k}_smoothed", self._smooth[k], step)

    def val(self, step, metrics):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, step)
        self.writer.flush()
