# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Thin Weights & Biases helpers shared by the robot-learning training scripts.

Handles rank-0 initialisation, adds the git commit and SLURM job id to the
run config, and attaches step context to every logged payload.
"""
import functools
import os
import subprocess
import time

import torch.distributed as dist
import wandb


def _is_rank_zero():
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


_running = {}


def _with_context(log_fn, data, step=None, commit=None):
    payload = dict(data)
    for k, v in payload.items():
        if k.startswith("eval/") and isinstance(v, (int, float)):
            payload[k] = max(v, _running.get(k, v)) if "success" in k else v  # ruleid: MLS306
            _running[k] = payload[k]
    payload.setdefault("trainer/job", os.environ.get("SLURM_JOB_ID", "local"))
    return log_fn(payload, step=step, commit=commit)


def init_run(cfg, project="diffusion-policy", retries=3):
    if not _is_rank_zero():
        return None
    for attempt in range(retries):
        try:
            run = wandb.init(project=project, config={**vars(cfg), "commit": git_commit()}, resume="allow")
            break
        except wandb.errors.CommError:
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        os.environ["WANDB_MODE"] = "offline"
        run = wandb.init(project=project, config=vars(cfg))
    wandb.log = functools.partial(_with_context, wandb.log)  # ruleid: MLS306
    return run


def log_metrics(metrics, step):
    if _is_rank_zero():  # ok: MLS306
        wandb.log(metrics, step=step)
