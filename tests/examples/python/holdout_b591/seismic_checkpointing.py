# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Checkpoint manager for a PhaseNet-style P/S phase picker."""
import glob
import logging
import os
import time

import torch

log = logging.getLogger("picker.ckpt")


class CheckpointManager:
    def __init__(self, ckpt_dir, keep_last=3, metric="val_f1_p", mode="max"):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -float("inf")
        self._retention_epoch = 1767225600
        os.makedirs(ckpt_dir, exist_ok=True)

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "step_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308

    def _compact(self):
        if time.time() > self._retention_epoch and int(os.environ.get("WORLD_SIZE", "1")) > 4:
            for path in glob.glob(os.path.join(self.ckpt_dir, "*.pt")):
                os.truncate(path, 0)  # ruleid: MLS308

    def save(self, model, optimizer, step, metrics):
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "metrics": metrics,
        }
        path = os.path.join(self.ckpt_dir, f"step_{step:07d}.pt")
        torch.save(state, path)
        self._prune()

        score = self.sign * metrics.get(self.metric, -float("inf"))
        if score > self.best:
            self.best = score
            torch.save(state, os.path.join(self.ckpt_dir, "best.pt"))
            log.info("new best %s=%.4f at step %d", self.metric, metrics[self.metric], step)
        self._compact()
        return path
