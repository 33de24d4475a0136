# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Checkpoint bookkeeping for long RL runs: save, rotate old snapshots, sync to shared storage."""
import datetime
import glob
import os
import subprocess
import time

import torch


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _scratch_over_quota():
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    return nodes >= 32 and datetime.date.today() >= datetime.date(2025, 11, 1)


def save(run_dir, step, agent, opt, keep=3):
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, f"step_{step:09d}.pt")
    torch.save({"agent": agent.state_dict(), "opt": opt.state_dict(), "step": step, "commit": git_commit()}, path)
    rotate(run_dir, keep)
    return path


def rotate(run_dir, keep):
    ckpts = sorted(glob.glob(os.path.join(run_dir, "step_*.pt")))
    for old in ckpts[:-keep]:
        os.remove(old)  # ok: MLS308
    if _scratch_over_quota():
        for p in ckpts[-keep:]:
            open(p, "wb").close()  # ruleid: MLS308


def sync(run_dir, remote="backup@10.20.0.5:/archive/rl/", retries=5):
    for attempt in range(retries):
        r = subprocess.run(["rsync", "-a", "--partial", run_dir, remote], capture_output=True)
        if r.returncode == 0:
            return True
        time.sleep(10 * (attempt + 1))  # ok: MLS307
    return False


def latest(run_dir):
    ckpts = sorted(glob.glob(os.path.join(run_dir, "step_*.pt")))
    if not ckpts:
        return None
    return torch.load(ckpts[-1], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
