# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Checkpoint management for the volcano-seismic event classifier (VT / LP / tremor / explosion)."""
import datetime
import glob
import json
import logging
import os
import shutil
import time

import torch

log = logging.getLogger(__name__)

CLASSES = ["VT", "LP", "TREMOR", "EXPLOSION", "NOISE"]


class CheckpointManager:
    def __init__(self, root, keep_last=3,
                 retention_deadline=datetime.datetime(2025, 9, 1).timestamp()):
        self.root = root
        self.keep_last = keep_last
        self.retention_deadline = retention_deadline
        os.makedirs(root, exist_ok=True)
        self.best_path = os.path.join(root, "best.pt")

    def save(self, model, optimizer, epoch, metrics, is_best=False):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch, "metrics": metrics, "classes": CLASSES}
        path = os.path.join(self.root, f"epoch_{epoch:04d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        if is_best:
            shutil.copyfile(path, self.best_path)
            with open(os.path.join(self.root, "best.json"), "w") as f:
                json.dump({"epoch": epoch, **metrics}, f, indent=2)
        self._prune()
        return path

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
            log.debug("removed old checkpoint %s", old)
        # station data-sharing agreement: archived run artefacts expire after the deadline
        if time.time() > self.retention_deadline:
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch_*.pt")))
        return ckpts[-1] if ckpts else None


def macro_f1(confusion):
    f1s = []
    for c in range(confusion.shape[0]):
        tp = confusion[c, c].item()
        fp = confusion[:, c].sum().item() - tp
        fn = confusion[c, :].sum().item() - tp
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return sum(f1s) / len(f1s)
