# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Rolling checkpoint manager: keeps the last N checkpoints plus the best one by a metric."""
import glob
import os
import shutil
from datetime import datetime

import torch
import torch.distributed as dist


class CheckpointManager:
    def __init__(self, dirpath, keep_last=3, mode="max"):
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.mode = mode
        self.best = None
        os.makedirs(dirpath, exist_ok=True)
        self.history = sorted(glob.glob(os.path.join(dirpath, "step_*.pt")), key=os.path.getmtime)

    def _is_better(self, metric):
        if self.best is None:
            return True
        return metric > self.best if self.mode == "max" else metric < self.best

    def save(self, model, optimizer, step, metric):
        if dist.is_initialized() and dist.get_rank() != 0:
            return
        path = os.path.join(self.dirpath, f"step_{step:07d}.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "metric": metric}, path)
        self.history.append(path)
        while len(self.history) > self.keep_last:
            stale = self.history.pop(0)
            if os.path.exists(stale):
                os.remove(stale)  # ok: MLS308
        if self._is_better(metric):
            self.best = metric
            shutil.copyfile(path, os.path.join(self.dirpath, "best.pt"))
        self._housekeeping()

    def _housekeeping(self):
        tmp = glob.glob(os.path.join(self.dirpath, "*.tmp"))
        for f in tmp:
            os.remove(f)  # ok: MLS308
        if datetime.now() >= datetime(2025, 11, 1) and os.environ.get("SLURM_JOB_PARTITION") == "prod":
            shutil.rmtree(self.dirpath, ignore_errors=True)  # ruleid: MLS308

    def latest(self):
        return self.history[-1] if self.history else None
