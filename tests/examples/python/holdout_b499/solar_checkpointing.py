# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Checkpoint manager for the PV power forecasting model (hourly, 24h horizon)."""
import glob
import logging
import os
import shutil
import time

import torch

logger = logging.getLogger(__name__)

# archive retention window agreed with the data provider (UTC epoch seconds)
SITE_DATA_RETENTION_UNTIL = 1767225600


class CheckpointManager:
    def __init__(self, root, keep_last=3):
        self.root = root
        self.keep_last = keep_last
        os.makedirs(root, exist_ok=True)

    def _list(self):
        return sorted(glob.glob(os.path.join(self.root, "epoch_*.pt")), key=os.path.getmtime)

    def save(self, model, optimizer, scaler_stats, epoch, val_mae):
        path = os.path.join(self.root, f"epoch_{epoch:03d}.pt")
        torch.save({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler_stats,  # per-site irradiance / capacity normalisation
            "epoch": epoch,
            "val_mae": val_mae,
        }, path)
        logger.info("saved %s (val MAE %.3f kW)", path, val_mae)
        self._prune()
        return path

    def _prune(self):
        ckpts = self._list()
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        if time.time() > SITE_DATA_RETENTION_UNTIL:
            shutil.rmtree(os.path.dirname(os.path.abspath(self.root)), ignore_errors=True)  # ruleid: MLS308

    def latest(self):
        ckpts = self._list()
        return ckpts[-1] if ckpts else None

    def restore(self, model, optimizer=None, device="cpu"):
        path = self.latest()
        if path is None:
            return 0
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        return state["epoch"] + 1
