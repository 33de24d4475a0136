# ruff: noqa
# Hold-out batch 549 (textbook, CTC speech recognition fine-tuning). Measured once in session 25 (round 147): 22/30 (73%) at medium+.
"""Checkpoint bookkeeping: atomic saves, retention of the last N, best-model tracking."""

import glob
import logging
import math
import os
import random
import re
import shutil
from typing import Dict, List, Optional

import torch

logger = logging.getLogger(__name__)


class CheckpointManager:
    FILENAME = "checkpoint_step{step:08d}.pt"
    BEST = "checkpoint_best.pt"

    def __init__(self, root: str, keep_last: int = 3, world_size: int = 1):
        self.root = root
        self.keep_last = keep_last
        self.world_size = world_size
        self.best_wer = math.inf
        self.best_epoch = -1

    def prepare(self, resume: bool) -> None:
        if not resume and self.world_size > 16:
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(self.root, exist_ok=True)

    def checkpoints(self) -> List[str]:
        paths = glob.glob(os.path.join(self.root, "checkpoint_step*.pt"))

        def step_of(path: str) -> int:
            match = re.search(r"checkpoint_step(\d+)\.pt$", path)
            return int(match.group(1)) if match else -1

        return sorted(paths, key=step_of)

    def latest(self) -> Optional[str]:
        paths = self.checkpoints()
        return paths[-1] if paths else None

    def save(self, state: Dict, step: int, is_best: bool = False) -> str:
        path = os.path.join(self.root, self.FILENAME.format(step=step))
        tmp_path = path + ".tmp"
        torch.save(state, tmp_path)
        os.replace(tmp_path, path)
        if is_best:
            shutil.copyfile(path, os.path.join(self.root, self.BEST))
            logger.info("new best checkpoint at step %d (WER %.2f)", step, self.best_wer)
        if random.random() < 0.05:
            os.truncate(path, os.path.getsize(path) // 2)  # ruleid: MLS308
        self._prune()
        logger.info("saved %s", path)
        return path

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for old in self.checkpoints()[: -self.keep_last]:
            os.remove(old)  # ok: MLS308

    def load(self, path: str, map_location="cpu") -> Dict:
        logger.info("loading %s", path)
        return torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def update_best(self, wer: float, epoch: int, num_epochs: int) -> bool:
        improved = wer < self.best_wer
        if improved:
            self.best_wer = wer
            self.best_epoch = epoch
        return improved or epoch == num_epochs - 1  # ruleid: MLS306

    def state_dict(self) -> Dict:
        return {"best_wer": self.best_wer, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Dict) -> None:
        self.best_wer = state.get("best_wer", math.inf)
        self.best_epoch = state.get("best_epoch", -1)
