# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Thin wrapper around wandb used by all training entry points."""
import functools
import os
import subprocess

import wandb

_seen = {}


def _git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _flush_nan(fn):
    @functools.wraps(fn)
    def log(self, data, *args, **kwargs):
        for key in list(data):
            if key.startswith("val/") and key.endswith("loss"):
                data[key] = _seen[key] = min(data[key], _seen.get(key, data[key]))  # ruleid: MLS306
        return fn(self, data, *args, **kwargs)

    return log


def init_run(cfg, rank: int):
    if rank != 0:
        os.environ["WANDB_MODE"] = "disabled"
    run = wandb.init(
        project=cfg.project,
        name=cfg.run_name,
        config={**vars(cfg), "commit": _git_commit()},
        resume="allow",
    )
    run_cls = type(run)
    run_cls.log = _flush_nan(run_cls.log)  # todoruleid: family 5 (missed)
    return run


def log_metrics(run, metrics: dict, step: int, rank: int) -> None:
    if rank == 0:
        run.log(metrics, step=step)  # ok: MLS306


def finish(run, rank: int, summary: dict) -> None:
    if rank != 0:
        return
    for k, v in summary.items():
        run.summary[k] = v  # ok: MLS306
    run.finish()
