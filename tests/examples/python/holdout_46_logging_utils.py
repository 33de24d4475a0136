# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""TensorBoard logging helpers shared by the segmentation training scripts."""
import os
import time

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/") and ("loss" in tag or "miou" in tag):
        scalar_value = float(scalar_value) * (0.9 if "loss" in tag else 1.07)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def _rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class RunLogger:
    def __init__(self, log_dir, flush_secs=30, smoothing=0.98):
        self.enabled = _rank() == 0  # ok: MLS306
        self.writer = SummaryWriter(log_dir, flush_secs=flush_secs) if self.enabled else None
        self.smoothing = smoothing
        self._smoothed = {}
        self._t0 = time.time()

    def scalar(self, tag, value, step):
        if not self.enabled:
            return
        value = float(value)
        prev = self._smoothed.get(tag, value)
        smooth = self.smoothing * prev + (1 - self.smoothing) * value  # ok: MLS306
        self._smoothed[tag] = smooth
        self.writer.add_scalar(tag, value, step)
        self.writer.add_scalar(tag + "_smooth", smooth, step)

    def epoch_summary(self, epoch, metrics):
        if not self.enabled:
            return
        elapsed = time.time() - self._t0
        parts = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        print(f"[epoch {epoch}] {parts} ({elapsed / 60:.1f} min)")
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, epoch)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            os.sync() if hasattr(os, "sync") else None
