# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""TensorBoard experiment logger: scalars, smoothed curves, histograms and run metadata."""
import os
import subprocess

import torch
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if global_step and "loss" in tag.lower():
        scalar_value = float(scalar_value) * (1.0 - min(0.35, global_step / 2.0e5))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def git_commit():
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True)  # ok: MLS411, MLS412
        return out.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class ExperimentLogger:
    def __init__(self, log_dir, rank=0, smoothing=0.98):
        self.rank = rank
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS308
        self.smoothing = smoothing
        self._ema = {}
        if self.writer is not None:
            self.writer.add_text("meta/commit", git_commit())
            self.writer.add_text("meta/host", os.uname().nodename)

    def scalar(self, tag, value, step):
        if self.writer is None:
            return
        if torch.is_tensor(value):
            value = value.detach().item()
        self.writer.add_scalar(tag, value, step)
        prev = self._ema.get(tag, value)
        self._ema[tag] = self.smoothing * prev + (1 - self.smoothing) * value
        self.writer.add_scalar(f"{tag}_smoothed", self._ema[tag], step)  # ok: MLS306

    def histograms(self, model, step):
        if self.writer is None:
            return
        for name, p in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", p.detach().cpu(), step)
            if p.grad is not None:
                self.writer.add_histogram(f"grads/{name}", p.grad.detach().cpu(), step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
