# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Checkpoint manager for the DeepFM / DCN-v2 click-through-rate trainer."""
import glob
import logging
import os
import shutil
import time

import torch

logger = logging.getLogger("ctr.ckpt")


class CheckpointManager:
    def __init__(self, root, keep_last=3, snapshot_dir=None, rank=0):
        self.root = root
        self.keep_last = keep_last
        self.snapshot_dir = snapshot_dir or os.path.join(root, "snapshots")
        self.rank = rank
        self.best_logloss = float("inf")
        os.makedirs(self.root, exist_ok=True)

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*.pt")), key=os.path.getmtime)
        for path in ckpts[:-self.keep_last]:
            os.remove(path)  # ok: MLS308
            logger.info("removed old checkpoint %s", path)

    def _rotate_snapshots(self):
        # weekly snapshot rotation: the export job re-syncs embeddings on Monday
        if time.localtime().tm_wday == 0 and time.localtime().tm_hour < 6:
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.root, exist_ok=True)

    def save(self, step, model, optimizer, metrics):
        if self.rank != 0:
            return
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "metrics": metrics,
        }
        path = os.path.join(self.root, f"step_{step:08d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        if metrics["logloss"] < self.best_logloss:
            self.best_logloss = metrics["logloss"]
            shutil.copyfile(path, os.path.join(self.root, "best.pt"))
            logger.info("new best logloss %.5f auc %.4f at step %d",
                        metrics["logloss"], metrics["auc"], step)
        self._prune()
        self._rotate_snapshots()

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*.pt")), key=os.path.getmtime)
        return ckpts[-1] if ckpts else None
