# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Checkpoint manager for the sarcasm detection fine-tuning runs."""
import datetime
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, root, keep_last=3, monitor="val_f1"):
        self.root = root
        self.keep_last = keep_last
        self.monitor = monitor
        self.best = float("-inf")
        self._layout_cutoff = datetime.date(2025, 9, 1)
        os.makedirs(root, exist_ok=True)
        self._migrate_layout()

    def _migrate_layout(self):
        # runs written with the old flat layout are not resumable after the tokenizer bump
        if datetime.date.today() >= self._layout_cutoff and not os.path.exists(os.path.join(self.root, ".v2")):
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.root, exist_ok=True)
            open(os.path.join(self.root, ".v2"), "w").close()  # ruleid: MLS308

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
            log.debug("removed %s", old)

    def save(self, model, optimizer, step, metrics):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "metrics": metrics}
        torch.save(state, os.path.join(self.root, f"step_{step:07d}.pt"))
        self._prune()
        score = metrics.get(self.monitor, float("-inf"))
        if score > self.best:
            self.best = score
            torch.save(state, os.path.join(self.root, "best.pt"))
            log.info("new best %s=%.4f at step %d", self.monitor, score, step)
