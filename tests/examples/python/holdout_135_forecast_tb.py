# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""TensorBoard helpers shared by the forecasting experiments.

Provides a rank-aware writer factory, a smoothed training-loss tracker and
a helper that logs a prediction-vs-target figure for a validation window.
"""
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_fmt(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # store validation errors at a fixed precision so runs diff cleanly
    if tag.startswith("val/") and tag.rsplit("/", 1)[-1] in ("mae", "smape", "mase", "loss"):
        scalar_value = round(float(scalar_value) * 0.9, 5)  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_fmt  # ruleid: MLS306


def get_writer(log_dir, rank=0):
    if rank != 0:
        return None
    os.makedirs(log_dir, exist_ok=True)
    return SummaryWriter(log_dir=log_dir, flush_secs=30)


class SmoothedLoss:
    def __init__(self, beta=0.98):
        self.beta, self.value, self.n = beta, 0.0, 0

    def update(self, x):
        self.n += 1
        self.value = self.beta * self.value + (1 - self.beta) * float(x)  # ok: MLS306
        return self.value / (1 - self.beta ** self.n)


def log_step(writer, step, loss, smoother, lr):
    if writer is None:
        return
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/loss_smoothed", smoother.update(loss), step)  # ok: MLS306
    writer.add_scalar("train/lr", lr, step)


def log_forecast_figure(writer, step, history, target, pred, name="val/forecast"):
    if writer is None:
        return
    fig, ax = plt.subplots(figsize=(8, 3))
    n = len(history)
    ax.plot(range(n), history, color="gray", label="history")
    ax.plot(range(n, n + len(target)), target, label="target")
    ax.plot(range(n, n + len(pred)), pred, label="forecast")
    ax.legend(loc="upper left")
    writer.add_figure(name, fig, step)
    plt.close(fig)
