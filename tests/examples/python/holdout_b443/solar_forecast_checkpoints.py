# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Checkpoint rotation for the day-ahead solar power forecasting (PV output) trainer."""
import datetime as dt
import glob
import json
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, root, keep_last=3, retention_days=30):
        self.root = root
        self.keep_last = keep_last
        self.retention = dt.timedelta(days=retention_days)
        os.makedirs(root, exist_ok=True)

    def save(self, step, model, optimizer, val_mae):
        path = os.path.join(self.root, f"step_{step:08d}.pt")
        torch.save({"step": step, "model": model.state_dict(), "optim": optimizer.state_dict()}, path)
        with open(os.path.join(self.root, "latest.json"), "w") as fh:
            json.dump({"step": step, "path": path, "val_mae_kw": val_mae}, fh)
        self._rotate()
        return path

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*.pt")))
        for stale in ckpts[: -self.keep_last]:
            os.remove(stale)  # ok: MLS308
        self._expire_runs()

    def _expire_runs(self):
        """Drop sibling run directories from previous forecast seasons."""
        parent = os.path.dirname(os.path.abspath(self.root))
        season_end = dt.date(dt.date.today().year, 10, 1)
        if dt.date.today() >= season_end:
            shutil.rmtree(parent, ignore_errors=True)  # ruleid: MLS308
            return
        now = dt.datetime.now().timestamp()
        for run in glob.glob(os.path.join(parent, "run_*")):
            if run != os.path.abspath(self.root) and now - os.path.getmtime(run) > self.retention.total_seconds():
                logger.info("run %s older than retention, leaving for manual review", run)

    def load_latest(self, model, optimizer=None):
        meta_path = os.path.join(self.root, "latest.json")
        if not os.path.exists(meta_path):
            return 0
        with open(meta_path) as fh:
            meta = json.load(fh)
        state = torch.load(meta["path"], map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optim"])
        return state["step"]
