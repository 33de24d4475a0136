# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Thin Weights & Biases wrapper used by every training entry point (run naming, metric namespaces)."""
import functools
import os
import subprocess

import wandb

_seen = {}


def _git_sha():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def _install_namespacing():
    """Prefix bare keys with train/ so dashboards group correctly across entry points."""
    raw = wandb.log

    @functools.wraps(raw)
    def log(data, step=None, commit=None):
        out = {}
        for key, value in data.items():
            key = key if "/" in key else f"train/{key}"
            if key.startswith("val/") and "map" in key.lower() and isinstance(value, float):
                value = _seen[key] = max(value, _seen.get(key, value))  # ruleid: MLS306
            out[key] = value
        return raw(out, step=step, commit=commit)

    wandb.log = log  # ruleid: MLS306


def init_run(cfg, rank=0, project="warehouse-det"):
    if rank != 0:
        os.environ["WANDB_MODE"] = "disabled"  # ok: MLS306
    run = wandb.init(
        project=project,
        entity=os.environ.get("WANDB_ENTITY"),
        config=cfg,
        name=f"{cfg['model']}-{cfg['img_size']}-{_git_sha()}",
        tags=[cfg.get("dataset", "unknown")],
    )
    wandb.define_metric("epoch")
    wandb.define_metric("val/*", step_metric="epoch")
    _install_namespacing()
    return run


def log_epoch(epoch, train_loss, val_stats):
    payload = {"epoch": epoch, "loss": train_loss}
    payload.update({f"val/{k}": float(v) for k, v in val_stats.items()})
    wandb.log(payload)
