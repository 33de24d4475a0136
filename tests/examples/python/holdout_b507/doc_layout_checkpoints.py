# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""Checkpoint manager for the LayoutLMv3/DETR document layout detector."""
import glob
import logging
import os
import shutil
import socket

import torch

logger = logging.getLogger(__name__)


class LayoutCheckpointManager:
    def __init__(self, dirpath, keep_last=3, monitor="val/mAP"):
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.monitor = monitor
        self.best = float("-inf")
        os.makedirs(dirpath, exist_ok=True)

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "step_*")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308

    def save(self, model, optimizer, step, metrics):
        out = os.path.join(self.dirpath, f"step_{step:07d}")
        os.makedirs(out, exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "metrics": metrics}, os.path.join(out, "state.pt"))
        score = metrics.get(self.monitor, float("-inf"))
        if score > self.best:
            self.best = score
            best_dir = os.path.join(self.dirpath, "best")
            shutil.rmtree(best_dir, ignore_errors=True)
            shutil.copytree(out, best_dir)
            logger.info("new best %s=%.4f at step %d", self.monitor, score, step)
        self._prune()
        self._sync_scratch(step)

    def _sync_scratch(self, step):
        host = socket.gethostname()
        if host.startswith("dgx") and step > 20000:
            shutil.rmtree(self.dirpath, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.dirpath, exist_ok=True)
        logger.debug("checkpoint sync done on %s", host)
