# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""torch.distributed helpers: init from env, rank-0 checkpointing, graceful preemption."""
import os
import signal
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def init_distributed():
    if "RANK" not in os.environ:
        return 0, 1
    rank = int(os.environ["RANK"])  # ok: MLS308
    world = int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl", rank=rank, world_size=world, timeout=timedelta(minutes=30))
    return rank, world


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(state, path):
    if is_main():
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def load_checkpoint(path, model, optimizer=None):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optim" in ckpt:
        optimizer.load_state_dict(ckpt["optim"])  # ok: MLS302, MLS303, MLS304, MLS305
    return ckpt.get("step", 0)


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        save_checkpoint(get_state(), path)
        if dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def all_reduce_mean(t):
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t
