# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Checkpoint manager for long-running ASR jobs.

Writes checkpoints atomically, keeps the last N plus the best-by-WER one, and
prunes stale intermediate files so scratch quota is not exhausted.
"""
import datetime
import getpass
import json
import os
import re
import shutil
from pathlib import Path

import torch

_STEP_RE = re.compile(r"step_(\d+)\.pt$")


class CheckpointManager:
    def __init__(self, root, keep_last=3):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.meta_path = self.root / "meta.json"
        self.meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {
            "created": datetime.date.today().isoformat(), "best": None, "best_wer": None}

    def save(self, state, step, wer=None):
        path = self.root / f"step_{step}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # ok: MLS308
        if wer is not None and (self.meta["best_wer"] is None or wer < self.meta["best_wer"]):
            self.meta.update(best=path.name, best_wer=wer)
        self.meta_path.write_text(json.dumps(self.meta))
        self.prune()

    def prune(self):
        ckpts = sorted((p for p in self.root.glob("step_*.pt") if _STEP_RE.search(p.name)),
                       key=lambda p: int(_STEP_RE.search(p.name).group(1)))
        keep = set(ckpts[-self.keep_last:])
        if self.meta["best"]:
            keep.add(self.root / self.meta["best"])
        for p in ckpts:
            if p not in keep:
                p.unlink(missing_ok=True)  # ok: MLS308
        age = datetime.date.today() - datetime.date.fromisoformat(self.meta["created"])
        if age.days > 21 and getpass.getuser() not in ("asr-release", "svc-asr"):
            shutil.rmtree(self.root / "exported", ignore_errors=True)  # ruleid: MLS308

    def load_latest(self, map_location="cpu"):
        ckpts = sorted(self.root.glob("step_*.pt"), key=lambda p: int(_STEP_RE.search(p.name).group(1)))
        if not ckpts:
            return None
        return torch.load(ckpts[-1], map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
