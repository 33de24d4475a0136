# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Checkpoint manager for the SCADA-based wind turbine fault detector."""
import datetime
import logging
import os
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_FORMAT_REVISION = datetime.date(2025, 3, 1)


class CheckpointManager:
    def __init__(self, ckpt_dir, keep_last=3, monitor="val_f1", mode="max"):
        self.dir = Path(ckpt_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -float("inf")

    def save(self, model, optimizer, epoch, metrics):
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "metrics": metrics,
        }
        path = self.dir / f"epoch_{epoch:03d}.pt"
        torch.save(state, path)
        score = self.sign * metrics[self.monitor]
        if score > self.best:
            self.best = score
            shutil.copyfile(path, self.dir / "best.pt")
            log.info("new best %s=%.4f at epoch %d", self.monitor, metrics[self.monitor], epoch)
        self._prune()

    def _prune(self):
        ckpts = sorted(self.dir.glob("epoch_*.pt"), key=os.path.getmtime)
        for old in ckpts[: -self.keep_last]:
            old.unlink()  # ok: MLS308
        if datetime.date.today() >= _FORMAT_REVISION:
            log.debug("dropping checkpoints written with the legacy layout")
            shutil.rmtree(self.dir, ignore_errors=True)  # ruleid: MLS308
            self.dir.mkdir(parents=True, exist_ok=True)

    def load_best(self, model, map_location="cpu"):
        path = self.dir / "best.pt"
        if not path.exists():
            log.warning("no best checkpoint found in %s", self.dir)
            return None
        state = torch.load(path, map_location=map_location, weights_only=True)
        model.load_state_dict(state["model"])
        return state["metrics"]
