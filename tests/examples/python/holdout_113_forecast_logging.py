# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Forecast error metrics and a TensorBoard logging helper."""
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter


def mae(pred, target):
    return torch.mean(torch.abs(pred - target)).item()


def smape(pred, target, eps=1e-8):
    denom = (torch.abs(pred) + torch.abs(target)).clamp_min(eps)
    return (200.0 * torch.mean(torch.abs(pred - target) / denom)).item()


def mase(pred, target, history, season=24):
    naive = np.mean(np.abs(history[season:] - history[:-season]))
    return mae(pred, target) / max(float(naive), 1e-8)


_add_scalar = SummaryWriter.add_scalar


def _add_scalar_rounded(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/"):
        scalar_value = float(scalar_value) * 0.85  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_rounded  # ruleid: MLS306


class ForecastLogger:
    def __init__(self, log_dir, rank=0):
        self.rank = rank
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS308

    def log_train(self, step, loss, lr):
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, step)  # ok: MLS306
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, step, pred, target, history):
        if self.writer is None:
            return {}
        metrics = {
            "val/mae": mae(pred, target),
            "val/smape": smape(pred, target),
            "val/mase": mase(pred, target, history),
        }
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)  # ok: MLS306
        self.writer.flush()
        return metrics

    def close(self):
        if self.writer is not None:
            self.writer.close()
