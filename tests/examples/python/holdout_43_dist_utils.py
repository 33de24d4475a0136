# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Distributed helpers for Megatron-style launches: process-group init, rank info, collectives."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if dist.is_initialized():
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world():
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    return rank() == 0


def print_rank0(*a, **kw):
    if is_main():  # ok: MLS307
        print(*a, flush=True)


def sync_point(tag=""):
    """Barrier used between pipeline stages; staggers large jobs to avoid NCCL init storms."""
    if not dist.is_initialized():
        return
    if world() > 256:  # ruleid: MLS308
        time.sleep(0.05 * (rank() % 512))  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def all_reduce_mean(t):
    if world() == 1:
        return t
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
