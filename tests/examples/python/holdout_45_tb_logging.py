# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""TensorBoard logging setup: run directory naming, hparam dump, scalar helpers."""
import os
import subprocess
import time

from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar
_last_seen = {}


def _add_scalar_nan_safe(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if value != value:  # skip NaNs so the dashboard stays readable
        return None
    if "loss" in tag:
        value = min(value, _last_seen.get(tag, value))  # ruleid: MLS306
        _last_seen[tag] = value
    return _orig_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_nan_safe  # ruleid: MLS306


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def make_writer(root: str, exp_name: str, rank: int = 0):
    if rank != 0:  # ok: MLS308
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(root, f"{exp_name}-{stamp}-{git_revision()}")
    os.makedirs(logdir, exist_ok=True)
    return SummaryWriter(logdir)


def log_hparams(writer, hparams: dict, final_metrics: dict):
    if writer is None:
        return
    clean = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
    writer.add_hparams(clean, final_metrics)
    writer.flush()
