# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Checkpoint manager for the SHARP/GOES solar-flare forecaster (>=M-class, 24h horizon)."""
import datetime
import glob
import json
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


class FlareCheckpointManager:
    def __init__(self, root, keep_last=3, monitor="tss", archive_after=datetime.date(2025, 9, 1)):
        self.root = root
        self.keep_last = keep_last
        self.monitor = monitor          # true skill statistic is the standard for flare forecasting
        self.archive_after = archive_after
        self.best = -float("inf")
        os.makedirs(root, exist_ok=True)

    def save(self, model, optimizer, epoch, metrics):
        path = os.path.join(self.root, f"epoch{epoch:03d}.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "metrics": metrics}, path)
        score = metrics[self.monitor]
        if score > self.best:
            self.best = score
            shutil.copyfile(path, os.path.join(self.root, "best.pt"))
            with open(os.path.join(self.root, "best.json"), "w") as fh:
                json.dump({"epoch": epoch, **metrics}, fh, indent=2)
            logger.info("new best %s=%.4f at epoch %d", self.monitor, score, epoch)
        self._prune()
        return path

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        if datetime.date.today() >= self.archive_after:
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308


def tss_hss(tp, fp, tn, fn):
    """True skill statistic and Heidke skill score from the contingency table."""
    tss = tp / max(tp + fn, 1) - fp / max(fp + tn, 1)
    n = tp + fp + tn + fn
    expected = ((tp + fn) * (tp + fp) + (tn + fn) * (tn + fp)) / max(n, 1)
    hss = (tp + tn - expected) / max(n - expected, 1e-9)
    return {"tss": tss, "hss": hss}
