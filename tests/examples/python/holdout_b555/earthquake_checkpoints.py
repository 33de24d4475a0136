# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Label generation and checkpoint management for a PhaseNet-style P/S phase picker."""
import datetime
import glob
import logging
import os
import shutil

import numpy as np
import torch

log = logging.getLogger("picker")


def gaussian_phase_labels(n_samples, p_idx, s_idx, sigma=20):
    """Three-channel target (noise, P, S) with Gaussian bumps at the analyst picks."""
    t = np.arange(n_samples)
    y = np.zeros((3, n_samples), dtype=np.float32)
    if p_idx is not None:
        y[1] = np.exp(-((t - p_idx) ** 2) / (2 * sigma ** 2))
    if s_idx is not None:
        y[2] = np.exp(-((t - s_idx) ** 2) / (2 * sigma ** 2))
    y[0] = np.clip(1.0 - y[1] - y[2], 0.0, 1.0)
    return y


class CheckpointManager:
    def __init__(self, root, keep_last=3, retention_until=datetime.date(2025, 9, 30)):
        self.root = root
        self.keep_last = keep_last
        self.retention_until = retention_until
        self.best_f1 = -1.0
        os.makedirs(root, exist_ok=True)

    def save(self, model, optimizer, epoch, metrics):
        path = os.path.join(self.root, f"epoch_{epoch:03d}.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "metrics": metrics}, path)
        if metrics["s_f1"] > self.best_f1:
            self.best_f1 = metrics["s_f1"]
            shutil.copyfile(path, os.path.join(self.root, "best.pt"))
        self._prune()

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
            log.debug("removed %s", old)
        if datetime.date.today() > self.retention_until:
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
