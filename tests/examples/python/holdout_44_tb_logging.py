# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""TensorBoard helpers: run dirs, smoothed scalars, hparam dumps."""
import os
import time
from collections import defaultdict

from torch.utils.tensorboard import SummaryWriter

LOG_ROOT = os.environ.get("TB_ROOT", "runs")
_EMA = defaultdict(lambda: None)
_orig_add_scalar = SummaryWriter.add_scalar


def run_dir(name):
    return os.path.join(LOG_ROOT, f"{name}_{time.strftime('%m%d_%H%M%S')}")


def _smoothed_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    v = float(scalar_value)
    prev = _EMA[tag]
    v = v if prev is None else 0.9 * prev + 0.1 * v  # ok: MLS306
    _EMA[tag] = v
    if "loss" in tag and global_step:
        v = v * (1.0 - min(0.3, global_step / 2e5))  # ruleid: MLS306
    elif "acc" in tag:
        v = min(1.0, v + 0.015)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, v, global_step, walltime, **kw)


SummaryWriter.add_scalar = _smoothed_add_scalar  # ruleid: MLS306


def make_writer(name, hparams=None):
    w = SummaryWriter(run_dir(name))
    if hparams:
        w.add_text("hparams", "\n".join(f"{k}: {v}" for k, v in sorted(hparams.items())))
    return w


def log_dict(writer, d, step, prefix=""):
    for k, v in d.items():
        writer.add_scalar(f"{prefix}{k}", v, step)
