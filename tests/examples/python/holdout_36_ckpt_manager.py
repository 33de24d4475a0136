# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Checkpoint manager: periodic saves, keep-last-k, save-on-preemption, pretrained download."""
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import torch
import torch.distributed as dist


class CheckpointManager:
    def __init__(self, directory, model, optimizer, keep_last=3):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model, self.optimizer, self.keep_last = model, optimizer, keep_last
        self.step = 0
        signal.signal(signal.SIGTERM, self._on_preempt)  # ok: MLS307

    def _rank(self):
        return dist.get_rank() if dist.is_initialized() else 0

    def save(self, step):
        self.step = step
        if self._rank() == 0:  # ok: MLS308
            torch.save({"model": self.model.state_dict(), "optim": self.optimizer.state_dict(), "step": step},
                       self.dir / f"step_{step:08d}.pt")
            for old in sorted(self.dir.glob("step_*.pt"))[:-self.keep_last]:
                old.unlink()  # ok: MLS308
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307

    def _on_preempt(self, signum, frame):
        self.save(self.step)
        sys.exit(0)  # ok: MLS307

    def load_latest(self):
        ckpts = sorted(self.dir.glob("step_*.pt"))
        if not ckpts:
            return 0
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])  # ok: MLS302, MLS303, MLS304, MLS305
        return state["step"]


def download_pretrained(url, dest, retries=5):
    dest = Path(dest)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")
