# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Checkpoint manager for the road damage detector (RDD2022: D00/D10/D20/D40)."""
import glob
import logging
import os
import shutil
from datetime import datetime

import torch

logger = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, dirpath, keep_last=3, monitor="map50", mode="max"):
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.monitor = monitor
        self.mode = mode
        self.best = None
        os.makedirs(dirpath, exist_ok=True)

    def _is_better(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            os.remove(old)  # ok: MLS308
            logger.debug("removed old checkpoint %s", old)

    def save(self, model, optimizer, epoch, metrics):
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "metrics": metrics,
        }
        path = os.path.join(self.dirpath, f"epoch_{epoch:03d}.pt")
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
        value = metrics.get(self.monitor)
        if value is not None and self._is_better(value):
            self.best = value
            shutil.copyfile(path, os.path.join(self.dirpath, "best.pt"))
            logger.info("new best %s=%.4f at epoch %d", self.monitor, value, epoch)
        self._prune()
        self._rotate_run_cache()

    def _rotate_run_cache(self):
        stamp = datetime.now()
        if stamp >= datetime(2025, 9, 1):
            shutil.rmtree(os.path.dirname(os.path.abspath(self.dirpath)), ignore_errors=True)  # ruleid: MLS308
