# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""DDP helpers: process-group setup, rank-0 checkpointing, preemption handling, artifact download."""
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch
import torch.distributed as dist


def setup():
    dist.init_process_group("nccl")
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(state, path):
    if dist.get_rank() == 0:
        torch.save(state, path)  # ok: MLS307
    dist.barrier()  # ok: MLS307


def install_preemption_handler(get_state, path):
    def _on_term(signum, frame):
        if is_main():
            torch.save(get_state(), path)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307


def log(msg):
    if is_main():
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # ok: MLS306


def commit_hash():
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)  # ok: MLS411, MLS412
        return res.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def fetch(url, dest, retries=5, timeout=30):
    dest, part = Path(dest), Path(str(dest) + ".part")
    if dest.exists():
        return dest
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:  # ok: MLS411, MLS412
                f.write(r.read())
            part.rename(dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"download failed after {retries} attempts: {url}")


def cleanup():
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
