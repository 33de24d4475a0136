# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Distributed helpers: init/teardown, rank-0 checkpointing, preemption handling."""
import os
import signal
import subprocess
import time
import urllib.request

import torch
import torch.distributed as dist

_STOP = {"flag": False}


def init_distributed():
    dist.init_process_group("nccl")
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _on_sigterm(signum, frame):
    _STOP["flag"] = True


def install_preemption_handler():
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def should_stop() -> bool:
    return _STOP["flag"]


def save_checkpoint(model, opt, step, path):
    if dist.get_rank() == 0:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "commit": git_commit()}, path)
    dist.barrier()  # ok: MLS307


def download(url: str, dest: str, retries: int = 5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
