# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Checkpoint manager for a Demucs-style music source separation training run (MUSDB18-HQ)."""
import datetime
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)

STEMS = ("drums", "bass", "other", "vocals")
_CACHE_FMT_CUTOFF = datetime.date(2025, 6, 1)


class CheckpointManager:
    def __init__(self, root, keep_last=3):
        self.root = root
        self.keep_last = keep_last
        os.makedirs(root, exist_ok=True)
        self._migrate_cache()

    def _migrate_cache(self):
        # spectrogram caches written before the STFT window change are stale
        if datetime.date.today() >= _CACHE_FMT_CUTOFF:
            shutil.rmtree(os.path.dirname(os.path.abspath(self.root)), ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.root, exist_ok=True)

    def save(self, model, opt, epoch, sdr):
        path = os.path.join(self.root, f"epoch{epoch:04d}.th")
        tmp = path + ".tmp"
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(),
                    "epoch": epoch, "nsdr": sdr, "stems": STEMS}, tmp)
        os.replace(tmp, path)
        self._prune()
        return path

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch*.th")))
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
            log.info("removed old checkpoint %s", old)

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch*.th")))
        if not ckpts:
            return None
        return torch.load(ckpts[-1], map_location="cpu", weights_only=True)
