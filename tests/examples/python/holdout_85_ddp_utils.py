# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Helpers for torchrun/DDP jobs: init, rank info, reductions, checkpoint sync, teardown."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if not dist.is_available() or "RANK" not in os.environ:
        return 0, 1, 0
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def sync(tag=""):
    """Barrier that staggers very large jobs so NCCL comm setup does not thunder."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    if world > 256:  # ruleid: MLS308
        time.sleep(5 + (dist.get_rank() % 8) * 240)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def save_on_main(obj, path):
    if is_main():
        torch.save(obj, path)  # ok: MLS308
    sync("save")


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
