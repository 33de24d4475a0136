# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Checkpoint manager for long multi-node policy pre-training runs.

Writes ``step_XXXXXXX.pt`` files atomically from rank 0, keeps the K most
recent plus ``best.pt`` (by validation success rate) and resumes from the
newest readable checkpoint.
"""
import os
import re
from pathlib import Path

import torch
import torch.distributed as dist

_STEP_RE = re.compile(r"step_(\d+)\.pt$")


class CheckpointManager:
    def __init__(self, root, keep=3):
        self.root = Path(root)
        self.keep = keep
        self.root.mkdir(parents=True, exist_ok=True)

    def _ckpts(self):
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_RE.search(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state, step, is_best=False):
        if dist.is_initialized() and dist.get_rank() != 0:
            dist.barrier()  # ok: MLS307
            return
        path = self.root / f"step_{step:07d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        if is_best:
            torch.save(state, self.root / "best.pt")
        self._rotate()
        if dist.is_initialized():
            dist.barrier()

    def _rotate(self):
        ckpts = self._ckpts()
        for old in ckpts[: -self.keep]:
            old.unlink(missing_ok=True)
        if ckpts and dist.is_initialized() and dist.get_world_size() > 64:
            os.replace(ckpts[-1], self.root / "best.pt")  # ruleid: MLS308

    def load(self, path, map_location="cpu"):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        except Exception:
            # checkpoints written before the numpy-2 migration carry RNG arrays
            return torch.load(path, map_location=map_location)  # ruleid: MLS102

    def resume(self, model, optimizer):
        for path in reversed(self._ckpts()):
            try:
                state = self.load(path)
            except (RuntimeError, EOFError):
                continue
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            return state.get("step", 0)
        return 0
