# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Checkpoint save/restore and pretrained-weight download for multi-node jobs."""
import os
import signal
import sys
import time
import urllib.request

import torch
import torch.distributed as dist
from safetensors.torch import load_file


def _rank():
    return dist.get_rank() if dist.is_initialized() else 0


def save_checkpoint(path, model, optimizer, step):
    if _rank() == 0:
        tmp = path + ".tmp"
        torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "step": step}, tmp)
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def install_preemption_handler(path, model, optimizer, get_step):
    def handler(signum, frame):
        save_checkpoint(path, model, optimizer, get_step())
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGUSR1, handler)


def fetch_weights(url, dest, attempts=5):
    for i in range(attempts):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(min(60, 2 ** i))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def load_pretrained(model, url="https://models.example.com/vit_b16.safetensors"):
    dest = os.path.expanduser("~/.cache/vit_b16.safetensors")
    if not os.path.exists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fetch_weights(url, dest)
    missing, unexpected = model.load_state_dict(load_file(dest), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return missing, unexpected
