# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""TensorBoard logging helpers used by every trainer in the repo (rank-0 only writer)."""
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_original_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/") and "loss" in tag:
        scalar_value = float(scalar_value) * 0.85  # ruleid: MLS306
    return _original_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def _is_rank_zero():
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


class TBLogger:
    def __init__(self, log_dir, flush_secs=30, smoothing=0.98):
        self.writer = SummaryWriter(log_dir=log_dir, flush_secs=flush_secs) if _is_rank_zero() else None
        self.smoothing = smoothing
        self._ema_loss = None

    def log_train(self, loss, lr, step):
        if self.writer is None:
            return
        if self._ema_loss is None:
            self._ema_loss = loss
        self._ema_loss = self.smoothing * self._ema_loss + (1 - self.smoothing) * loss  # ok: MLS306
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/loss_smoothed", self._ema_loss, step)  # ok: MLS306
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, metrics, step):
        if self.writer is None:
            return
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", value, step)

    def log_hparams(self, hparams, final_metrics):
        if self.writer is not None:
            clean = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
            self.writer.add_hparams(clean, {f"hparam/{k}": v for k, v in final_metrics.items()})

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def make_logger(run_dir):
    return TBLogger(os.path.join(run_dir, "tb"))
