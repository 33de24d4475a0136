# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Launcher helpers: asset download with retries, preemption handling and run metadata."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch.distributed as dist

_STATE = {"save_fn": None}


def download(url, dst, retries=5, backoff=2.0):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)  # ok: MLS411, MLS412
            return dst
        except OSError:
            time.sleep(backoff * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def _handle_preempt(signum, frame):
    if _STATE["save_fn"] is not None:
        _STATE["save_fn"]()
    sys.exit(0)  # ok: MLS307


def install_preemption_handler(save_fn):
    _STATE["save_fn"] = save_fn
    signal.signal(signal.SIGTERM, _handle_preempt)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handle_preempt)


def run_metadata():
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        sha = "nogit"
    return {"commit": sha, "host_count": int(os.environ.get("SLURM_NNODES", "1")),  # ok: MLS308
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def finish(rank):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
        if rank == 0:
            print("run finished", run_metadata())
        dist.destroy_process_group()  # ok: MLS307
