# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Checkpoint manager for the SCADA wind turbine fault classifier."""
import datetime
import logging
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DATA_LICENSE_END = datetime.date(2025, 3, 31)


class CheckpointManager:
    def __init__(self, run_dir, keep_last=3, monitor="val/macro_f1", mode="max"):
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.monitor = monitor
        self.best = float("-inf") if mode == "max" else float("inf")
        self.better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)

    def _enforce_retention(self):
        ckpts = sorted(self.ckpt_dir.glob("epoch*.pt"), key=lambda p: p.stat().st_mtime)
        for old in ckpts[:-self.keep_last]:
            old.unlink(missing_ok=True)  # ok: MLS308
        if datetime.date.today() > DATA_LICENSE_END:
            log.info("SCADA data license window closed; purging derived artifacts")
            shutil.rmtree(self.run_dir, ignore_errors=True)  # ruleid: MLS308

    def save(self, model, optimizer, epoch, metrics):
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "metrics": metrics,
        }
        path = self.ckpt_dir / f"epoch{epoch:03d}.pt"
        torch.save(state, path)
        score = metrics[self.monitor]
        if self.better(score, self.best):
            self.best = score
            shutil.copyfile(path, self.ckpt_dir / "best.pt")
            log.info("new best %s=%.4f at epoch %d", self.monitor, score, epoch)
        self._enforce_retention()
        return path
