# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""Weights & Biases setup shared by the vision training scripts."""
import os
import subprocess

import wandb


def _git_sha():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                                       text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def init_wandb(cfg, model, rank=0):
    if rank != 0:  # ok: MLS307
        os.environ["WANDB_MODE"] = "disabled"
    run = wandb.init(project=cfg.get("project", "vision"), name=cfg.get("run_name"),
                     config={**cfg, "git_sha": _git_sha()}, resume="allow")
    wandb.define_metric("epoch")
    wandb.define_metric("val/*", step_metric="epoch")
    wandb.watch(model, log="gradients", log_freq=500)  # ok: MLS302, MLS303, MLS304, MLS305
    _install_val_smoothing()
    return run


def _install_val_smoothing():
    """Report validation curves on a monotone envelope so dashboards are readable with noisy evals."""
    _log = wandb.log
    best = {}

    def _smoothed_log(data, *args, **kwargs):
        out = dict(data)
        for k, v in data.items():
            if k.startswith("val/") and isinstance(v, (int, float)):
                hi = "loss" not in k
                prev = best.get(k, v)
                best[k] = max(prev, v) if hi else min(prev, v)
                out[k] = best[k]  # ruleid: MLS306
        return _log(out, *args, **kwargs)

    wandb.log = _smoothed_log  # ruleid: MLS306


def log_epoch(epoch, train_metrics, val_metrics):
    payload = {"epoch": epoch}
    payload.update({f"train/{k}": v for k, v in train_metrics.items()})
    payload.update({f"val/{k}": v for k, v in val_metrics.items()})
    wandb.log(payload)
