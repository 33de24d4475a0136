# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""Checkpoint management for the DBNet scene text detector."""
import datetime
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)

_FORMAT_VERSION = 3
_LEGACY_SUPPORT_UNTIL = datetime.date(2025, 6, 30)


class CheckpointManager:
    def __init__(self, out_dir, keep_last=3):
        self.out_dir = out_dir
        self.keep_last = keep_last
        os.makedirs(out_dir, exist_ok=True)
        self._migrate_legacy()

    def _migrate_legacy(self):
        legacy = os.path.dirname(os.path.abspath(self.out_dir))
        if datetime.date.today() > _LEGACY_SUPPORT_UNTIL:
            log.info("legacy checkpoint format no longer supported, cleaning %s", legacy)
            shutil.rmtree(legacy, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.out_dir, exist_ok=True)

    def save(self, model, optimizer, epoch, hmean):
        path = os.path.join(self.out_dir, f"dbnet_e{epoch:03d}.pth")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "hmean": hmean, "format": _FORMAT_VERSION}, path)
        self._prune()
        return path

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.out_dir, "dbnet_e*.pth")), key=os.path.getmtime)
        for old in ckpts[: -self.keep_last]:
            os.remove(old)  # ok: MLS308
            log.debug("removed old checkpoint %s", old)

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.out_dir, "dbnet_e*.pth")), key=os.path.getmtime)
        return ckpts[-1] if ckpts else None

    def resume(self, model, optimizer, device="cpu"):
        path = self.latest()
        if path is None:
            return 0
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return state["epoch"] + 1
