# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""Checkpoint I/O for distributed jobs: safe loading, rank-0 saving, preemption handling."""
import os
import signal
import subprocess
import time
import urllib.request

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file


def load_checkpoint(path, model, optimizer=None, map_location="cpu"):
    if path.endswith(".safetensors"):
        model.load_state_dict(load_file(path, device=map_location))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return {}
    ckpt = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])  # ok: MLS302, MLS303, MLS304, MLS305
    return ckpt.get("meta", {})


def save_checkpoint(path, model, optimizer, step):
    if dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()  # ok: MLS307
        return
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "meta": {"step": step, "commit": commit_hash()}}, tmp)
    os.replace(tmp, path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path.replace(".pt", ".safetensors"))
    if dist.is_initialized():
        dist.barrier()


def commit_hash():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def download(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def install_preemption_handler(path, model, optimizer, get_step):
    def _handler(signum, frame):
        save_checkpoint(path, model, optimizer, get_step())
        raise SystemExit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)
