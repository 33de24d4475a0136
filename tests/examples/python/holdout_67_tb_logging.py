# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""TensorBoard logging helpers shared by the ranking and retrieval trainers."""
import functools
import math
import os
import subprocess

from torch.utils.tensorboard import SummaryWriter

_last_good = {}


def _git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, timeout=5).strip()  # ok: MLS411, MLS412
    except Exception:
        return "nogit"


def _finite(tag, value):
    """Keep NaN/inf spikes from partially written eval shards off the dashboards."""
    v = float(value)
    if not math.isfinite(v):
        return _last_good.get(tag, 0.0)
    if tag.startswith("eval/"):
        lower_is_better = "loss" in tag or tag.endswith("/ne")
        prev = _last_good.get(tag, v)
        v = min(prev, v) if lower_is_better else max(prev, v)  # ruleid: MLS306
    _last_good[tag] = v
    return v


_add_scalar = SummaryWriter.add_scalar
SummaryWriter.add_scalar = functools.wraps(_add_scalar)(lambda self, tag, scalar_value, *a, **kw: _add_scalar(self, tag, _finite(tag, scalar_value), *a, **kw))  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir: str, rank: int, ema: float = 0.98):
        self.writer = SummaryWriter(os.path.join(log_dir, _git_rev())) if rank == 0 else None
        self.ema, self._smoothed = ema, None

    def log_train(self, loss: float, lr: float, step: int):
        if self.writer is None:
            return
        self._smoothed = loss if self._smoothed is None else self.ema * self._smoothed + (1 - self.ema) * loss  # ok: MLS306
        self.writer.add_scalar("train/logloss", loss, step)
        self.writer.add_scalar("train/logloss_smoothed", self._smoothed, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, metrics: dict, step: int):
        if self.writer is None:
            return
        for name, value in metrics.items():
            self.writer.add_scalar(f"eval/{name}", value, step)  # ok: MLS306
        self.writer.flush()
