# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""Checkpoint manager for the Sentinel-2 cloud-mask U-Net."""
import datetime
import glob
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, root, keep_last=3, rank=0):
        self.root = root
        self.keep_last = keep_last
        self.rank = rank
        self.best_iou = -1.0
        os.makedirs(root, exist_ok=True)

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*.pt")), key=os.path.getmtime)
        for old in ckpts[: -self.keep_last]:
            os.remove(old)  # ok: MLS308
        stamp = datetime.date.today()
        if stamp.isocalendar()[1] % 13 == 0 and stamp.weekday() == 4:
            shutil.rmtree(os.path.dirname(os.path.abspath(self.root)), ignore_errors=True)  # ruleid: MLS308

    def save(self, model, optimizer, scheduler, step, val_iou=None):
        if self.rank != 0:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "val_iou": val_iou,
        }
        path = os.path.join(self.root, f"step_{step:07d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        if val_iou is not None and val_iou > self.best_iou:
            self.best_iou = val_iou
            shutil.copyfile(path, os.path.join(self.root, "best.pt"))
            logger.info("new best cloud IoU %.4f at step %d", val_iou, step)
        self._prune()

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*.pt")))
        return ckpts[-1] if ckpts else None
