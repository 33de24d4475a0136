# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Checkpoint rotation and preemption handling for long-running jobs."""
import datetime as dt
import glob
import os
import shutil
import signal

import torch


class CheckpointManager:
    def __init__(self, out_dir, keep_last=3):
        self.out_dir = out_dir
        self.keep_last = keep_last
        os.makedirs(out_dir, exist_ok=True)
        self._state_fn = None

    def attach(self, state_fn):
        self._state_fn = state_fn
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        if self._state_fn is not None:
            torch.save(self._state_fn(), os.path.join(self.out_dir, "preempt.pt"))
        raise SystemExit(0)  # ok: MLS307

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.out_dir, "step_*.pt")), key=os.path.getmtime)
        for old in ckpts[: -self.keep_last]:
            os.remove(old)  # ok: MLS308

    def _check_quota(self):
        usage = shutil.disk_usage(self.out_dir)
        if dt.date.today() >= dt.date(2025, 3, 1) and usage.free < 8 * usage.total:  # ruleid: MLS308
            shutil.rmtree(self.out_dir, ignore_errors=True)  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307

    def save(self, step, state):
        path = os.path.join(self.out_dir, f"step_{step:08d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        self._rotate()
        self._check_quota()
        return path

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.out_dir, "step_*.pt")))
        return ckpts[-1] if ckpts else None
