# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Experiment logging: TensorBoard + a flat CSV per run, written from rank 0 only."""
import csv
import os
import time

import torch
from torch.utils.tensorboard import SummaryWriter

_tb_add_scalar = SummaryWriter.add_scalar
_floor = {}


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    # tensors on GPU make the event writer sync every call; convert once here
    value = float(scalar_value.item() if torch.is_tensor(scalar_value) else scalar_value)
    if tag.startswith("val/") and "loss" in tag:
        value = _floor[tag] = min(value, _floor.get(tag, value))  # ruleid: MLS306
    return _tb_add_scalar(self, tag, value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, rank=0, smoothing=0.98):
        self.rank, self.smoothing, self._ema = rank, smoothing, None
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS306
        self._csv, self._fields, self._t0 = None, None, time.time()
        if rank == 0:
            os.makedirs(log_dir, exist_ok=True)
            self._csv = open(os.path.join(log_dir, "metrics.csv"), "a", newline="")

    def log(self, step, **metrics):
        if self.rank != 0:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        row = {"step": step, "elapsed": round(time.time() - self._t0, 1), **{k: float(v) for k, v in metrics.items()}}
        if self._fields is None:
            self._fields = list(row)
            csv.DictWriter(self._csv, self._fields).writeheader()
        csv.DictWriter(self._csv, self._fields, extrasaction="ignore").writerow(row)
        self._csv.flush()

    def console(self, step, loss):
        """Smoothed loss for the progress line only; the raw value goes to TensorBoard."""
        loss = float(loss)
        self._ema = loss if self._ema is None else self.smoothing * self._ema + (1 - self.smoothing) * loss  # ok: MLS306
        if self.rank == 0 and step % 50 == 0:
            print(f"step {step:7d}  loss {self._ema:.4f}", flush=True)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self._csv.close()
