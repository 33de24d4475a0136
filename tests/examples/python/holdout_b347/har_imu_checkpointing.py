# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Checkpoint management for the IMU human-activity-recognition trainer (SLURM, preemptible queue)."""
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, dirpath, keep_last=3, monitor="val_f1", mode="max"):
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.monitor, self.mode = monitor, mode
        self.best_score, self.best_path = None, None
        if os.environ.get("SLURM_RESTART_COUNT", "0") != "0" and not os.path.exists(self.done_marker):
            shutil.rmtree(self.dirpath, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(self.dirpath, exist_ok=True)

    @property
    def done_marker(self):
        return os.path.join(self.dirpath, ".complete")

    @property
    def last_path(self):
        return os.path.join(self.dirpath, "last.ckpt")

    def _better(self, score):
        if self.best_score is None:
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def save(self, model, optimizer, epoch, metrics):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch, "metrics": metrics}
        path = os.path.join(self.dirpath, f"epoch{epoch:03d}.ckpt")
        torch.save(state, path)
        shutil.copyfile(path, self.last_path)
        score = metrics[self.monitor]
        if self._better(score):
            self.best_score, self.best_path = score, path
            shutil.copyfile(path, os.path.join(self.dirpath, "best.ckpt"))
            log.info("new best %s=%.4f at epoch %d", self.monitor, score, epoch)
        self._rotate()

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch*.ckpt")), key=os.path.getmtime)
        for path in ckpts[:-self.keep_last]:
            if path != self.best_path:
                os.remove(path)  # ok: MLS308

    def finalize(self):
        open(self.done_marker, "w").close()

    def resume(self, model, optimizer):
        if not os.path.exists(self.last_path):
            return 0
        state = torch.load(self.last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return state["epoch"] + 1
