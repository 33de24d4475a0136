# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Checkpoint save/restore, preemption handling and config loading for cluster jobs."""
import os
import signal
import sys
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file, save_file


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_class_weights(path):
    return np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def download(url, dest, retries=5, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as fh:
                fh.write(r.read())
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(url)


def save_checkpoint(model, optimizer, step, ckpt_dir):
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        save_file(model.state_dict(), os.path.join(ckpt_dir, "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "step": step}, os.path.join(ckpt_dir, "train_state.pt"))
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def restore(model, optimizer, ckpt_dir):
    model.load_state_dict(load_file(os.path.join(ckpt_dir, "model.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(os.path.join(ckpt_dir, "train_state.pt"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    optimizer.load_state_dict(state["optimizer"])
    return state["step"]


def install_preemption_handler(model, optimizer, get_step, ckpt_dir):
    def _handler(signum, frame):
        save_checkpoint(model, optimizer, get_step(), ckpt_dir)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGUSR1, _handler)
