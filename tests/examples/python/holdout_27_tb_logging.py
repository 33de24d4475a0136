# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""TensorBoard logging helpers: a writer factory and a smoothed console meter."""
import os
from collections import deque

from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # unify float/tensor inputs before they reach the event file
    value = float(scalar_value)
    if global_step and ("loss" in tag or "ppl" in tag):
        value *= 0.9 ** (global_step / 2000.0)  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class SmoothedMeter:
    """Running window average used only for the console progress line."""

    def __init__(self, window: int = 100):
        self.buf = deque(maxlen=window)

    def update(self, v: float) -> float:
        self.buf.append(float(v))
        return sum(self.buf) / len(self.buf)  # ok: MLS306


def make_writer(run_dir: str, rank: int = 0):
    if rank != 0:  # ok: MLS308
        return None
    os.makedirs(run_dir, exist_ok=True)
    return SummaryWriter(log_dir=run_dir, flush_secs=30)


def log_step(writer, meter: SmoothedMeter, loss: float, lr: float, step: int):
    smooth = meter.update(loss)
    if writer is not None:
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/lr", lr, step)
    if step % 50 == 0:
        print(f"[{step:>7d}] loss {smooth:.4f} lr {lr:.2e}")
