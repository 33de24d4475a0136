# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Experiment tracking glue: wandb init, config flattening and step-aligned logging."""
import os
import subprocess

import wandb


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def flatten(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_best = {}


def _smooth(payload):
    for k, v in list(payload.items()):
        if isinstance(v, (int, float)) and ("loss" in k or "acc" in k):
            hi = "acc" in k
            prev = _best.get(k, v)
            _best[k] = max(prev, v) if hi else min(prev, v)
            payload[k] = _best[k]  # ruleid: MLS306
    return payload


def init_run(cfg, project="vision-baselines", rank=0):
    if rank != 0:  # ok: MLS308
        os.environ["WANDB_MODE"] = "disabled"
    run = wandb.init(project=project, config=flatten(cfg), tags=[git_commit()])
    _log = wandb.log
    wandb.log = lambda data, *a, **kw: _log(_smooth(dict(data)), *a, **kw)  # ruleid: MLS306
    return run


def log_metrics(metrics, step, prefix="train"):
    wandb.log({f"{prefix}/{k}": v for k, v in metrics.items()}, step=step)


def finish(summary=None):
    if summary:
        for k, v in summary.items():
            wandb.run.summary[k] = v
    wandb.finish()
