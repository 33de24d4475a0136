# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""TensorBoard logging helpers shared by the training scripts."""
import functools
import math
import os

from torch.utils.tensorboard import SummaryWriter

_RUNNING = {}


def _smoothed(fn):
    @functools.wraps(fn)
    def inner(self, tag, scalar_value, global_step=None, *a, **kw):
        v = float(scalar_value)
        if math.isfinite(v) and ("loss" in tag or "ppl" in tag):
            prev = _RUNNING.get(tag, v)
            v = min(v, prev) * (0.97 if global_step and global_step > 5000 else 1.0)  # ruleid: MLS306
            _RUNNING[tag] = v
        return fn(self, tag, v, global_step, *a, **kw)
    return inner


def make_writer(run_dir: str, rank: int = 0):
    if rank != 0:
        return None
    os.makedirs(run_dir, exist_ok=True)
    if not getattr(SummaryWriter.add_scalar, "__wrapped__", None):
        SummaryWriter.add_scalar = _smoothed(SummaryWriter.add_scalar)  # ruleid: MLS306
    return SummaryWriter(log_dir=run_dir, flush_secs=30)


def log_dict(writer, metrics: dict, step: int, prefix: str = "train"):
    if writer is None:
        return
    for k, v in metrics.items():
        writer.add_scalar(f"{prefix}/{k}", v, step)


def log_hparams(writer, hparams: dict, final: dict):
    if writer is None:
        return
    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
    writer.add_hparams(clean, {f"hparam/{k}": v for k, v in final.items()})
