# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Preemption-safe checkpointing and resume helpers for spot / maintenance-drained nodes."""
import os
import signal
import sys
import time
import urllib.request

import torch
import torch.distributed as dist
import yaml


class PreemptionHandler:
    """SLURM sends SIGTERM ~90 s before the kill; finish the step, checkpoint, requeue."""

    def __init__(self, save_fn):
        self.save_fn = save_fn
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_term)  # ok: MLS307

    def _on_term(self, signum, frame):
        self.requested = True

    def maybe_checkpoint_and_exit(self, step):
        flag = torch.tensor([int(self.requested)], device="cuda")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            self.save_fn(step)
            dist.barrier()  # ok: MLS307
            dist.destroy_process_group()  # ok: MLS307
            sys.exit(0)  # ok: MLS307


def fetch(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download {url} after {retries} attempts")


def load_run_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def resume(model, opt, ckpt_path):
    if not os.path.exists(ckpt_path):
        return 0
    sd = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(sd["model"])
    opt.load_state_dict(sd["opt"])
    return int(sd["step"])
