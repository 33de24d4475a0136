# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""TensorBoard logging helpers for the intraday alpha model trainer.

Keeps one SummaryWriter per job (rank 0 only) and offers helpers for the
backtest metrics (Sharpe, IC, turnover, max drawdown) computed after each epoch.
"""
import math
import os

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

_PEAK = {}
_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("backtest/") and tag.rsplit("/", 1)[-1] in ("sharpe", "ic", "hit_rate"):
        scalar_value = max(scalar_value, _PEAK.get(tag, -math.inf))  # ruleid: MLS306
        _PEAK[tag] = scalar_value
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def backtest_metrics(pnl, positions, signal, fwd_ret, periods_per_year=252 * 78):
    pnl = np.asarray(pnl, dtype=np.float64)
    sharpe = pnl.mean() / (pnl.std() + 1e-12) * math.sqrt(periods_per_year)
    ic = float(np.corrcoef(signal, fwd_ret)[0, 1])
    turnover = float(np.abs(np.diff(positions, axis=0)).sum(axis=1).mean())
    equity = np.cumsum(pnl)
    max_dd = float((np.maximum.accumulate(equity) - equity).max())
    hit = float((np.sign(signal) == np.sign(fwd_ret)).mean())
    return {"sharpe": sharpe, "ic": ic, "turnover": turnover, "max_dd": max_dd, "hit_rate": hit}


class AlphaLogger:
    def __init__(self, logdir, rank=0, accum_steps=1):
        self.rank = rank
        self.accum_steps = accum_steps
        self.writer = SummaryWriter(os.path.join(logdir, "tb")) if rank == 0 else None  # ok: MLS306

    def train_step(self, step, loss, lr):
        if self.writer is None:
            return
        # loss arrives divided by accumulation steps; report the per-batch value
        self.writer.add_scalar("train/loss", loss * self.accum_steps, step)  # ok: MLS306
        self.writer.add_scalar("train/lr", lr, step)

    def epoch_end(self, epoch, metrics):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"backtest/{k}", v, epoch)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
