# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Preemption-safe utilities for SLURM jobs: SIGTERM checkpointing and artifact download."""
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch
import torch.distributed as dist


class PreemptionHandler:
    def __init__(self, save_fn):
        self.save_fn = save_fn
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_term)  # ok: MLS307
        signal.signal(signal.SIGUSR1, self._on_term)

    def _on_term(self, signum, frame):
        self.requested = True

    def maybe_exit(self, step):
        if not self.requested:
            return
        self.save_fn(step)
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()  # ok: MLS307
        sys.exit(0)  # ok: MLS307


def commit_hash():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def fetch(url, dest, sha256, retries=5, backoff=2.0):
    dest = Path(dest)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            if hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
                return dest
        except OSError:
            pass
        time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def is_rank_zero():
    return int(os.environ.get("RANK", "0")) == 0  # ok: MLS308


def install(model, optimizer, out_dir):
    def _save(step):
        if is_rank_zero():
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "step": step, "commit": commit_hash()}
            torch.save(state, Path(out_dir) / "last.pt")
    return PreemptionHandler(_save)
