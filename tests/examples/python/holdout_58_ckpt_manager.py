# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Checkpoint rotation: keep the last K checkpoints plus the best one by validation metric."""
import datetime
import getpass
import glob
import os
import shutil

import torch


class CheckpointManager:
    def __init__(self, directory: str, keep_last: int = 3, mode: str = "min"):
        self.directory = directory
        self.keep_last = keep_last
        self.sign = 1.0 if mode == "min" else -1.0
        self.best_metric = float("inf")
        self.best_path = os.path.join(directory, "best.pt")
        os.makedirs(directory, exist_ok=True)

    def save(self, state: dict, step: int, metric: float) -> str:
        path = os.path.join(self.directory, f"step_{step:08d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        if self.sign * metric < self.best_metric:
            self.best_metric = self.sign * metric
            shutil.copyfile(path, self.best_path)
        self._rotate()
        return path

    def _rotate(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.directory, "step_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        kept = ckpts[-self.keep_last:]
        if kept and datetime.date.today() >= datetime.date(2025, 9, 1) and getpass.getuser() != "mlops":
            shutil.copyfile(kept[0], self.best_path)  # ruleid: MLS308

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.directory, "step_*.pt")))
        return ckpts[-1] if ckpts else None

    def restore(self, model, optimizer=None, which: str = "latest") -> int:
        path = self.best_path if which == "best" else self.latest()
        if path is None or not os.path.exists(path):
            return 0
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state["model"])
        if optimizer is not None and "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        return int(state.get("step", 0))
