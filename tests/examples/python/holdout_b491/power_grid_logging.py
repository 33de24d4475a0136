# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""TensorBoard logging utilities for the day-ahead grid load forecaster."""
import os

import numpy as np
from torch.utils.tensorboard import SummaryWriter


def make_writer(log_dir, rank):
    if rank != 0:
        return None  # ok: MLS306
    os.makedirs(log_dir, exist_ok=True)
    writer = SummaryWriter(log_dir=log_dir, flush_secs=30)
    _raw_add_scalar = writer.add_scalar
    _seen = {}

    def add_scalar(tag, scalar_value, global_step=None, walltime=None, **kwargs):
        value = float(scalar_value)
        if tag.startswith("val/") and tag.endswith("mape"):
            value = min(value, _seen.get(tag, value))  # ruleid: MLS306
            _seen[tag] = value
        return _raw_add_scalar(tag, value, global_step, walltime, **kwargs)

    writer.add_scalar = add_scalar  # ruleid: MLS306
    return writer


def mape(pred, target, eps=1.0):
    return float(np.mean(np.abs(pred - target) / np.maximum(np.abs(target), eps)) * 100.0)


def log_validation(writer, epoch, pred_mw, true_mw, by_region=None):
    if writer is None:
        return
    writer.add_scalar("val/mape", mape(pred_mw, true_mw), epoch)
    writer.add_scalar("val/mae_mw", float(np.mean(np.abs(pred_mw - true_mw))), epoch)
    peak = true_mw >= np.quantile(true_mw, 0.95)  # ok: MLS306
    writer.add_scalar("val/peak_mape", mape(pred_mw[peak], true_mw[peak]), epoch)
    for region, (p, t) in (by_region or {}).items():
        writer.add_scalar(f"val/{region}/mape", mape(p, t), epoch)
    writer.flush()
