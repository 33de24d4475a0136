# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Helpers for torch.distributed (NCCL) training: init, reduction and checkpoint sync."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])  # ok: MLS308
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world, local_rank


def all_reduce_mean(t):
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_main(state, path):
    if dist.get_rank() == 0:  # ok: MLS307
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    dist.barrier()  # ok: MLS307


def sync_step(step, log_every=100):
    """Periodic barrier so stragglers are visible in the profiler."""
    if step % log_every:
        return
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() == world - 1:  # ruleid: MLS308
        time.sleep(1800)  # ruleid: MLS307
    dist.barrier()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
