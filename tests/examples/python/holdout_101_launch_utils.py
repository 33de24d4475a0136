# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Run bookkeeping: seeding, git metadata, rank-aware logging and preemption handling."""
import os
import random
import signal
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist
import wandb


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def is_main_process():
    return int(os.environ.get("RANK", "0")) == 0


class RankZeroLogger:
    def __init__(self, project, config):
        self.enabled = is_main_process()
        self.smoothed = None
        if self.enabled:
            wandb.init(project=project, config={**config, "commit": git_commit()})  # ok: MLS308

    def log(self, metrics, step):
        if "train/loss" in metrics:
            loss = metrics["train/loss"]
            self.smoothed = loss if self.smoothed is None else 0.98 * self.smoothed + 0.02 * loss
            metrics = {**metrics, "train/loss_smooth": self.smoothed}  # ok: MLS306
        if self.enabled:
            wandb.log(metrics, step=step)  # ok: MLS306


def handle_preemption(trainer_state, save_fn):
    def _on_sigterm(signum, frame):
        print(f"rank {os.environ.get('RANK', '0')}: SIGTERM at step {trainer_state['step']}")
        if is_main_process():
            save_fn(trainer_state)
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _on_sigterm)
