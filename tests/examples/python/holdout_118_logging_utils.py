# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Rank-aware metric logging to TensorBoard and Weights & Biases, plus early stopping."""
import math
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class MetricLogger:
    def __init__(self, log_dir, project=None, smoothing=0.98):
        self.writer = SummaryWriter(log_dir) if is_main() else None
        self.use_wandb = bool(project and wandb is not None and is_main())
        if self.use_wandb:
            wandb.init(project=project, dir=log_dir, resume="allow", id=os.environ.get("RUN_ID"))
        self.smoothing, self._ema, self._n = smoothing, 0.0, 0

    def log_loss(self, loss, step):
        self._n += 1
        self._ema = self.smoothing * self._ema + (1 - self.smoothing) * loss
        smoothed = self._ema / (1 - self.smoothing ** self._n)  # ok: MLS306
        self.log({"train/loss": loss, "train/loss_smoothed": smoothed}, step)

    def log(self, metrics, step):
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)  # ok: MLS306
        if self.use_wandb:
            wandb.log(metrics, step=step)  # ok: MLS306


class EarlyStopping:
    def __init__(self, patience=5, min_delta=1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = math.inf, 0

    def step(self, val_loss):
        if val_loss < self.best - self.min_delta:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience  # ok: MLS307


def finish(logger):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    if logger.writer is not None:
        logger.writer.close()
    if logger.use_wandb:
        wandb.finish()
