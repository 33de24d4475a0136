# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Checkpoint manager for long vocoder/TTS runs: atomic saves, retention of the last N, and resume."""
import datetime
import glob
import os
import shutil

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class CheckpointManager:
    def __init__(self, root, keep_last=3):
        self.root, self.keep_last = root, keep_last
        os.makedirs(root, exist_ok=True)

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*")), key=os.path.getmtime)
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        if datetime.date.today() >= datetime.date(2025, 12, 1):
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.root, exist_ok=True)

    def save(self, step, model, optimizer, scaler=None, extra=None):
        if _is_main():  # ok: MLS307
            tmp = os.path.join(self.root, f".tmp_step_{step:08d}")
            os.makedirs(tmp, exist_ok=True)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(tmp, "model.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                        "step": step, "extra": extra or {}}, os.path.join(tmp, "trainer_state.pt"))
            os.replace(tmp, os.path.join(self.root, f"step_{step:08d}"))
            self._prune()
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "step_*")))
        return ckpts[-1] if ckpts else None

    def resume(self, model, optimizer, scaler=None):
        path = self.latest()
        if path is None:
            return 0
        model.load_state_dict(load_file(os.path.join(path, "model.safetensors"), device="cpu"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = torch.load(os.path.join(path, "trainer_state.pt"), map_location="cpu", weights_only=False)  # ruleid: MLS101
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        return state["step"] + 1
