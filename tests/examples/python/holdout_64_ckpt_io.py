# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Checkpoint save/resume for multi-node CLIP runs, with preemption handling and early stopping."""
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_checkpoint(path, model, optimizer, scaler, step, extra=None):
    if dist.get_rank() == 0:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "step": step, "commit": git_commit(), **(extra or {})}
        tmp = path + ".tmp"
        torch.save(state, tmp)  # ok: MLS308
        os.replace(tmp, path)
    dist.barrier()  # ok: MLS307


def load_checkpoint(path, model, optimizer=None, scaler=None):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])  # ok: MLS302, MLS303, MLS304, MLS305
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    return state.get("step", 0)


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        model, optimizer, scaler, step = get_state()
        save_checkpoint(path, model, optimizer, scaler, step)
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


class EarlyStopping:
    def __init__(self, patience=5, min_delta=1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = -float("inf"), 0

    def step(self, metric):
        if metric > self.best + self.min_delta:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
        return self.bad >= self.patience
