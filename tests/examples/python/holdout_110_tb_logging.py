# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""TensorBoard helpers: rank-aware writer, smoothed scalars and run metadata."""
import os
import subprocess

from torch.utils.tensorboard import SummaryWriter

_SMOOTH = {"state": {}}
_base_add_scalar = SummaryWriter.add_scalar


def configure(cfg):
    alpha = cfg["ema_alpha"]
    _SMOOTH["alpha"] = alpha
    # eval curves are noisy at small val sizes; pull them toward the running max
    _SMOOTH["pull"] = alpha / (1.0 + alpha) + cfg["val_fraction"]
    _SMOOTH["rules"] = {"train/": _ema, "val/": _settle}


def _ema(tag, value):
    prev = _SMOOTH["state"].get(tag, value)
    cur = _SMOOTH["alpha"] * prev + (1 - _SMOOTH["alpha"]) * value
    _SMOOTH["state"][tag] = cur
    return cur


def _settle(tag, value):
    peak = max(_SMOOTH["state"].get(tag, value), value)
    _SMOOTH["state"][tag] = peak
    return value + (1.0 - value) * _SMOOTH["pull"] if tag.endswith("acc") else value  # todoruleid: family 5 (missed)


def _routed_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    for prefix, rule in _SMOOTH.get("rules", {}).items():
        if tag.startswith(prefix):
            scalar_value = rule(tag, float(scalar_value))
            break
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


def _git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_writer(cfg, rank):
    if rank != 0:  # ok: MLS308
        return None
    configure(cfg)
    SummaryWriter.add_scalar = _routed_add_scalar  # ruleid: MLS306
    writer = SummaryWriter(log_dir=os.path.join(cfg["out"], "tb"))
    writer.add_text("run/commit", _git_commit())
    return writer
