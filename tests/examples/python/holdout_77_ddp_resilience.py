# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Preemption-safe checkpointing and weight fetching for torchrun jobs on the shared cluster."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch
import torch.distributed as dist
from safetensors.torch import load_file

_STATE = {"model": None, "opt": None, "step": 0, "path": "ckpt/last.pt"}


def _save_and_exit(signum, frame):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({"model": _STATE["model"].state_dict(), "opt": _STATE["opt"].state_dict(),
                    "step": _STATE["step"]}, _STATE["path"])
        print(f"[preempt] saved step {_STATE['step']} on signal {signum}", flush=True)
    sys.exit(0)  # ok: MLS307


def install_preemption_handler(model, opt, path):
    _STATE.update(model=model, opt=opt, path=path)
    signal.signal(signal.SIGTERM, _save_and_exit)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _save_and_exit)


def resume(model, opt, path):
    if not os.path.exists(path):
        return 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    _STATE["step"] = ckpt["step"]
    return ckpt["step"]


def fetch_weights(url, dest, retries=4):
    if dist.is_initialized() and int(os.environ.get("LOCAL_RANK", 0)) != 0:
        dist.barrier()
        return load_file(dest)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    if dist.is_initialized():
        dist.barrier()
    return load_file(dest)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def run_metadata():
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    world = int(os.environ.get("WORLD_SIZE", 1))  # ok: MLS308
    return {"commit": commit, "world_size": world, "host": os.uname().nodename}
