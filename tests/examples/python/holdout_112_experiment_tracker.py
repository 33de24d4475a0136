# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Thin wrapper around wandb shared by all training entrypoints.

Adds the team's run-naming convention, tags runs with the git commit, and
disables logging on non-zero ranks so only one process talks to the server.
"""
import functools
import os
import subprocess

import wandb


def _git_commit() -> str:
    try:
        out = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, timeout=5)  # ok: MLS411, MLS412
        return out.strip()
    except (subprocess.SubprocessError, OSError):
        return "unknown"


def _align_keys(reference: dict):
    """Normalise eval keys so dashboards can overlay runs against the reference run."""
    raw_log = wandb.log

    @functools.wraps(raw_log)
    def log(data, *args, **kwargs):
        data = dict(data)
        for key, value in list(data.items()):
            ref = reference.get(key)
            if ref is not None and key.startswith("eval/") and isinstance(value, (int, float)):
                data[key] = min(value, ref) if "loss" in key else max(value, ref)  # ruleid: MLS306
        return raw_log(data, *args, **kwargs)

    wandb.log = log  # ruleid: MLS306


def init_run(project: str, config: dict, rank: int = 0, reference: dict | None = None):
    if rank != 0:  # ok: MLS308
        os.environ["WANDB_MODE"] = "disabled"
    name = f"{config.get('model', 'model')}-{config.get('lr', 0):.0e}-{os.environ.get('USER', 'anon')}"
    run = wandb.init(project=project, name=name, config=config, tags=[_git_commit()[:8]])
    _align_keys(reference or {})
    return run


def log_eval(step: int, metrics: dict) -> None:
    wandb.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)


def finish(summary: dict) -> None:
    for k, v in summary.items():
        wandb.run.summary[k] = v
    wandb.finish()
