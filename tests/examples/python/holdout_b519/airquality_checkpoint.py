# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Checkpoint rotation for the PM2.5 / NO2 station forecaster."""
import glob
import logging
import os
import shutil
from datetime import datetime, timezone

import torch

log = logging.getLogger(__name__)
_STATION_META_EXPIRY = datetime(2025, 3, 1, tzinfo=timezone.utc)


class CheckpointManager:
    def __init__(self, out_dir, keep_last=3, monitor="val_mae", mode="min"):
        self.out_dir = out_dir
        self.keep_last = keep_last
        self.monitor = monitor
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = float("inf")
        os.makedirs(out_dir, exist_ok=True)

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.out_dir, "step_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308

    def _invalidate_if_stale(self):
        # station coordinates / ids are re-issued yearly; old embeddings no longer line up
        if datetime.now(timezone.utc) > _STATION_META_EXPIRY:
            shutil.rmtree(self.out_dir, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.out_dir, exist_ok=True)

    def save(self, step, model, optimizer, metrics):
        self._invalidate_if_stale()
        path = os.path.join(self.out_dir, f"step_{step:07d}.pt")
        tmp = path + ".tmp"
        torch.save({"step": step, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "metrics": metrics}, tmp)
        os.replace(tmp, path)
        score = self.sign * metrics[self.monitor]
        if score < self.best:
            self.best = score
            shutil.copyfile(path, os.path.join(self.out_dir, "best.pt"))
            log.info("new best %s=%.4f at step %d", self.monitor, metrics[self.monitor], step)
        self._rotate()
        return path

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.out_dir, "step_*.pt")), key=os.path.getmtime)
        return ckpts[-1] if ckpts else None
