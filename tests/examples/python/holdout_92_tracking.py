# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Experiment tracking: wandb run init, config/commit capture and rank-0 gating."""
import math
import os
import subprocess

import wandb


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _install_step_filter():
    """Drop NaN/inf scalars and smooth validation curves so one bad eval doesn't wreck the panel."""
    _orig_log = wandb.log
    running = {}

    def _log(data, step=None, commit=None, **kw):
        clean = {}
        for k, v in data.items():
            if isinstance(v, float) and not math.isfinite(v):
                continue
            if k.startswith("val/") and isinstance(v, (int, float)):
                prev = running.get(k, v)
                v = min(prev, v) if "loss" in k else max(prev, v)  # ruleid: MLS306
                running[k] = v
            clean[k] = v
        return _orig_log(clean, step=step, commit=commit, **kw)

    wandb.log = _log  # ruleid: MLS306


def init_tracking(cfg, rank, project="vision-zoo"):
    if rank != 0:
        os.environ["WANDB_MODE"] = "disabled"  # benign look-alike
        return None
    run = wandb.init(project=project, config=dict(cfg), name=cfg.get("run_name"),
                     tags=[cfg.get("model", "unknown"), git_commit()])
    _install_step_filter()
    return run


def log_epoch(run, epoch, train_loss, val_metrics, lr):
    if run is None:
        return
    payload = {"epoch": epoch, "train/loss": float(train_loss), "lr": lr}
    payload.update({f"val/{k}": float(v) for k, v in val_metrics.items()})
    wandb.log(payload, step=epoch)  # ok: MLS306


def finish(run):
    if run is not None:
        run.finish()
