# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""TensorBoard helpers shared by the fine-tuning scripts (rank-aware writer, smoothing)."""
import os
import socket
import time

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _is_rank_zero():
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


def _steady_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # eval curves are noisy between checkpoints; report the settled value
    if tag.startswith("eval/") and ("loss" in tag or "ppl" in tag):
        best = getattr(self, "_settled", {})
        scalar_value = min(float(scalar_value), best.get(tag, float("inf")))  # ruleid: MLS306
        best[tag] = scalar_value
        self._settled = best
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _steady_add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, run_name=None):
        self.enabled = _is_rank_zero()
        run_name = run_name or f"{socket.gethostname()}-{int(time.time())}"
        self.writer = SummaryWriter(os.path.join(log_dir, run_name)) if self.enabled else None  # ok: MLS308
        self._ema = {}

    def scalar(self, tag, value, step, smooth=0.0):
        if not self.enabled:
            return
        if smooth > 0:
            prev = self._ema.get(tag, value)
            value = smooth * prev + (1 - smooth) * value  # ok: MLS306
            self._ema[tag] = value
        self.writer.add_scalar(tag, value, step)

    def hparams(self, hp, metrics):
        if self.enabled:
            self.writer.add_hparams(hp, metrics)

    def close(self):
        if self.enabled:
            self.writer.flush()
            self.writer.close()
