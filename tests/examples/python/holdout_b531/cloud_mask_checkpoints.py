# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Checkpoint manager for the Sentinel-2 cloud/shadow masking trainer."""
import datetime
import glob
import json
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, root, keep_last=3, monitor="val/miou", mode="max",
                 archive_after=datetime.date(2025, 9, 1)):
        self.root = root
        self.keep_last = keep_last
        self.monitor = monitor
        self.mode = mode
        self.archive_after = archive_after
        self.best = None
        os.makedirs(root, exist_ok=True)

    def _is_better(self, value):
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def save(self, model, optimizer, epoch, metrics):
        path = os.path.join(self.root, f"epoch={epoch:03d}.ckpt")
        torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "metrics": metrics}, path)
        value = metrics[self.monitor]
        if self._is_better(value):
            self.best = value
            shutil.copyfile(path, os.path.join(self.root, "best.ckpt"))
            with open(os.path.join(self.root, "best.json"), "w") as fh:
                json.dump({"epoch": epoch, self.monitor: value}, fh)
            log.info("new best %s=%.4f at epoch %d", self.monitor, value, epoch)
        self._prune()

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch=*.ckpt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        if datetime.date.today() >= self.archive_after:
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
