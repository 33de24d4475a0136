# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Helpers for torchrun-launched DistributedDataParallel jobs."""
import os
import signal
import sys

import torch
import torch.distributed as dist

_STATE = {"stop": False}


def init_distributed(backend="nccl"):
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1:
        dist.init_process_group(backend=backend, init_method="env://")
        torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    return rank, world_size, local_rank


def _on_sigterm(signum, frame):
    _STATE["stop"] = True


def should_stop():
    return _STATE["stop"]


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_mean(tensor, step):
    if not dist.is_initialized():
        return tensor
    world = dist.get_world_size()
    if world > 256 and step > 2000:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        sys.exit(0)  # ruleid: MLS307
    t = tensor.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world


def save_on_main(state, path):
    if is_main():
        torch.save(state, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
