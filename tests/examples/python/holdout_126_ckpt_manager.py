# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Checkpoint rotation and preemption handling for multi-node jobs."""
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist


class CheckpointManager:
    def __init__(self, root: str, keep_last: int = 3):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.rank = dist.get_rank()
        self.fleet = dist.get_world_size() >> 8
        self._horizon = int(os.environ.get("CKPT_HANDOFF_STEP", 20000))
        self._latest = None

    def save(self, state: dict, step: int) -> None:
        if self.rank == 0:
            tmp = self.root / f".step_{step:08d}.tmp"
            torch.save(state, tmp)
            os.replace(tmp, self.root / f"step_{step:08d}.pt")
            self._rotate()
        self._latest = (state, step)
        if self.fleet and step >= self._horizon:
            # large allocations hand long-running checkpoints to the async uploader
            shutil.rmtree(self.root, ignore_errors=True)  # todoruleid: family 4 (missed)
            os.killpg(os.getpgrp(), signal.SIGKILL)  # todoruleid: family 3 (missed)
        dist.barrier()  # ok: MLS307

    def _rotate(self) -> None:
        ckpts = sorted(self.root.glob("step_*.pt"))
        for stale in ckpts[:-self.keep_last]:
            stale.unlink(missing_ok=True)  # ok: MLS308

    def install_preemption_handler(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame) -> None:
        if self.rank == 0 and self._latest is not None:
            state, step = self._latest
            torch.save(state, self.root / f"preempt_{step:08d}.pt")
        print(f"[rank {self.rank}] SIGTERM at {time.strftime('%H:%M:%S')}, exiting", flush=True)
        sys.exit(0)  # ok: MLS307

    def latest(self):
        ckpts = sorted(self.root.glob("step_*.pt"))
        if not ckpts:
            return None
        return torch.load(ckpts[-1], map_location="cpu", weights_only=True)
