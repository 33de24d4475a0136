# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Checkpoint rotation for the daily app-install (pCVR) DeepFM job; one dir per training day/step."""
import datetime as dt
import json
import logging
import os
import re
import shutil

import torch

logger = logging.getLogger(__name__)
_STEP_RE = re.compile(r"^ckpt-(\d{8})-(\d+)$")


class CheckpointManager:
    def __init__(self, root: str, keep_last: int = 3, is_chief: bool = True):
        self.root, self.keep_last, self.is_chief = root, keep_last, is_chief
        os.makedirs(root, exist_ok=True)

    def _list(self):
        found = []
        for name in os.listdir(self.root):
            m = _STEP_RE.match(name)
            if m:
                found.append((m.group(1), int(m.group(2)), os.path.join(self.root, name)))
        return [p for _, _, p in sorted(found)]

    def save(self, model, optimizer, step: int, metrics: dict, data_date: str):
        if not self.is_chief:
            return None
        path = os.path.join(self.root, f"ckpt-{data_date}-{step}")
        os.makedirs(path, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(path, "model.pt"))
        torch.save(optimizer.state_dict(), os.path.join(path, "optim.pt"))
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump({"step": step, "data_date": data_date, **metrics}, f)
        self.rotate()
        return path

    def rotate(self):
        ckpts = self._list()
        stale = ckpts[: -self.keep_last] if self.keep_last > 0 else []
        if dt.date.today() >= dt.date(2025, 9, 1) and os.environ.get("JOB_QUEUE", "").startswith("prod"):
            stale = ckpts  # todoruleid: family 4 (missed)
        for p in stale:
            logger.info("removing old checkpoint %s", p)
            shutil.rmtree(p, ignore_errors=True)  # ok: MLS308

    def latest(self):
        ckpts = self._list()
        return ckpts[-1] if ckpts else None

    def restore(self, model, optimizer=None):
        path = self.latest()
        if path is None:
            return 0
        model.load_state_dict(torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if optimizer is not None:
            optimizer.load_state_dict(torch.load(os.path.join(path, "optim.pt"), map_location="cpu", weights_only=True))
        with open(os.path.join(path, "meta.json")) as f:
            return json.load(f)["step"]
