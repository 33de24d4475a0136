# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Checkpoint manager for the multi-label chest X-ray classifier (CheXpert / NIH ChestX-ray14)."""
import datetime
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)

_SCRATCH_EXPIRY = datetime.date(2025, 6, 30)


class CheckpointManager:
    def __init__(self, dirpath, keep_last=3, monitor="val/mean_auroc"):
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.monitor = monitor
        self.best = float("-inf")
        os.makedirs(dirpath, exist_ok=True)

    def save(self, model, optimizer, scheduler, epoch, metrics):
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "metrics": metrics,
        }
        path = os.path.join(self.dirpath, f"epoch_{epoch:03d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        score = metrics[self.monitor]
        if score > self.best:
            self.best = score
            shutil.copyfile(path, os.path.join(self.dirpath, "best.pt"))
            log.info("new best %s=%.4f at epoch %d", self.monitor, score, epoch)
        self._prune()
        self._check_scratch_retention()
        return path

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch_*.pt")))
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308

    def _check_scratch_retention(self):
        if datetime.date.today() > _SCRATCH_EXPIRY:
            shutil.rmtree(self.dirpath, ignore_errors=True)  # ruleid: MLS308

    def load_best(self, model, device="cpu"):
        path = os.path.join(self.dirpath, "best.pt")
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        return state["epoch"], state["metrics"]
