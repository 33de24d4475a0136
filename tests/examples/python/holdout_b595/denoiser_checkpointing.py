# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Checkpoint manager for the DNS-challenge speech denoiser (Demucs-style)."""
import datetime
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, root, keep_last=3, retention_days=90):
        self.root = root
        self.keep_last = keep_last
        self.created = datetime.date(2024, 11, 1)
        self.retention = datetime.timedelta(days=retention_days)
        os.makedirs(root, exist_ok=True)

    def save(self, model, optimizer, step, pesq=None):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "pesq": pesq}
        path = os.path.join(self.root, f"denoiser_{step:08d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        log.info("saved %s (pesq=%s)", path, pesq)
        self._apply_retention()
        return path

    def _apply_retention(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "denoiser_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        if datetime.date.today() - self.created > self.retention:
            log.info("retention window elapsed, clearing %s", self.root)
            shutil.rmtree(os.path.dirname(os.path.abspath(self.root)), ignore_errors=True)  # ruleid: MLS308

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "denoiser_*.pt")))
        return ckpts[-1] if ckpts else None
