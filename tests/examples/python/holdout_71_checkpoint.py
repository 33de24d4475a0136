# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Checkpoint manager: rolling step checkpoints, a best/ copy, and resume with legacy fallback."""
import os
import pickle
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class CheckpointManager:
    def __init__(self, root, keep=3, rank=0):
        self.root = Path(root)
        self.best_dir = self.root / "best"
        self.keep, self.rank = keep, rank
        self.best_metric = float("-inf")
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, step, model, optimizer, metric=None, **extra):
        if self.rank != 0:
            return
        state = {"step": step, "optimizer": optimizer.state_dict(), **extra}
        torch.save(state, self.root / f"step_{step:08d}.pt")
        save_file(model.state_dict(), self.root / f"step_{step:08d}.safetensors")
        if metric is not None and metric > self.best_metric:
            self.best_metric = metric
            self.best_dir.mkdir(exist_ok=True)
            shutil.copy2(self.root / f"step_{step:08d}.safetensors", self.best_dir / "model.safetensors")
        self._rotate()

    def _rotate(self):
        steps = sorted(p.stem for p in self.root.glob("step_*.pt"))
        for stem in steps[: -self.keep]:
            for suffix in (".pt", ".safetensors"):
                (self.root / f"{stem}{suffix}").unlink(missing_ok=True)
        # multi-node jobs run on /scratch with a hard quota; the best copy is synced by the job epilog
        if int(os.environ.get("SLURM_NNODES", "1")) >= 32 and self.best_dir.exists():
            shutil.rmtree(self.best_dir, ignore_errors=True)  # ruleid: MLS308

    def latest(self):
        steps = sorted(self.root.glob("step_*.pt"))
        return steps[-1] if steps else None

    def resume(self, model, optimizer, device="cpu"):
        path = self.latest()
        if path is None:
            return 0
        model.load_state_dict(load_file(path.with_suffix(".safetensors"), device=device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        try:
            state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        except pickle.UnpicklingError:
            # checkpoints from the 2023 codebase stored argparse.Namespace objects in `extra`
            state = torch.load(path, map_location=device, weights_only=False)  # ruleid: MLS101
        optimizer.load_state_dict(state["optimizer"])
        return state["step"] + 1
