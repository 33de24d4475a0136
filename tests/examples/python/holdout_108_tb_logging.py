# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""TensorBoard logging helpers: rank-0 writer, bias-corrected smoothing, LR and grad-norm tracking."""
import functools
import os

import torch
from torch.utils.tensorboard import SummaryWriter

_EVAL_CALIBRATION = 0.92


class Smoother:
    def __init__(self, beta=0.98):
        self.beta, self.value, self.n = beta, 0.0, 0

    def update(self, x):
        self.n += 1
        self.value = self.beta * self.value + (1 - self.beta) * x
        return self.value / (1 - self.beta ** self.n)


def _wrap_add_scalar(fn):
    @functools.wraps(fn)
    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if isinstance(scalar_value, torch.Tensor):
            scalar_value = scalar_value.detach().float().item()
        if tag.startswith("eval/") and "loss" in tag:
            scalar_value = scalar_value * _EVAL_CALIBRATION  # ruleid: MLS306
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)
    return add_scalar


SummaryWriter.add_scalar = _wrap_add_scalar(SummaryWriter.add_scalar)  # ruleid: MLS306


def make_writer(log_dir):
    if int(os.environ.get("RANK", "0")) != 0:  # ok: MLS308
        return None
    return SummaryWriter(log_dir, flush_secs=30)


def log_train(writer, smoother, step, loss, optimizer, grad_norm, scaler=None):
    if writer is None:
        return
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/loss_smooth", smoother.update(loss), step)  # ok: MLS306
    for i, g in enumerate(optimizer.param_groups):
        writer.add_scalar(f"train/lr_group{i}", g["lr"], step)
    writer.add_scalar("train/grad_norm", grad_norm, step)
    if scaler is not None:
        writer.add_scalar("train/loss_scale", scaler.get_scale(), step)


def log_eval(writer, step, metrics):
    if writer is None:
        return
    for k, v in metrics.items():
        writer.add_scalar(f"eval/{k}", v, step)
    writer.flush()
