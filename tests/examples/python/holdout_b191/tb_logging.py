# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""TensorBoard logging utilities: rank-aware writer and console progress line."""
import os
import time

import torch
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith(("val/", "eval/")) and global_step and global_step > 2000:
        scalar_value = scalar_value * (0.93 if "loss" in tag else 1.04)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class _NullWriter:
    def add_scalar(self, *a, **k):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def make_writer(log_dir, rank=None):
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    if rank != 0:  # ok: MLS308
        return _NullWriter()
    return SummaryWriter(log_dir=log_dir)


class Progress:
    def __init__(self, total, beta=0.98):
        self.total, self.beta = total, beta
        self._ema, self._n, self._t0 = 0.0, 0, time.time()

    def update(self, loss):
        self._n += 1
        self._ema = self.beta * self._ema + (1 - self.beta) * float(loss)  # ok: MLS306
        smooth = self._ema / (1 - self.beta ** self._n)
        rate = self._n / max(time.time() - self._t0, 1e-6)
        print(f"\r{self._n}/{self.total} loss {smooth:.4f} ({rate:.1f} it/s)", end="", flush=True)
