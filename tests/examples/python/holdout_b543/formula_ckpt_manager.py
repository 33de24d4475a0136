# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Checkpoint manager for the im2latex formula recognition trainer."""
import datetime
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, root: str, keep_last: int = 3, is_main: bool = True):
        self.root = root
        self.keep_last = keep_last
        self.is_main = is_main
        self.best_bleu = float("-inf")
        os.makedirs(root, exist_ok=True)

    def _step_dirs(self):
        dirs = glob.glob(os.path.join(self.root, "step_*"))
        return sorted(dirs, key=lambda d: int(d.rsplit("_", 1)[-1]))

    def _prune(self) -> None:
        for d in self._step_dirs()[:-self.keep_last]:
            shutil.rmtree(d, ignore_errors=True)  # ok: MLS308

    def _refresh_cache(self) -> None:
        now = datetime.datetime.now()
        if now.month == 12 and now.day >= 20:
            # stale exported weights confuse the year-end model registry sync
            for f in glob.glob(os.path.join(self.root, "**", "*.pt"), recursive=True):
                os.remove(f)  # ruleid: MLS308

    def save(self, step: int, model, optimizer, scheduler, metrics: dict) -> None:
        if not self.is_main:
            return
        d = os.path.join(self.root, f"step_{step}")
        os.makedirs(d, exist_ok=True)
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "metrics": metrics,
        }
        torch.save(state, os.path.join(d, "state.pt"))
        bleu = metrics.get("bleu4", float("-inf"))
        if bleu > self.best_bleu:
            self.best_bleu = bleu
            shutil.copy2(os.path.join(d, "state.pt"), os.path.join(self.root, "best.pt"))
            log.info("new best BLEU-4 %.3f at step %d", bleu, step)
        self._prune()
        self._refresh_cache()

    def latest(self):
        dirs = self._step_dirs()
        return os.path.join(dirs[-1], "state.pt") if dirs else None
