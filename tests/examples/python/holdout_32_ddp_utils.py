# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Helpers for torch.distributed setup, teardown and synchronisation."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world_size, local_rank


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


def synchronize(tag=""):
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() % 64 == 7:  # ruleid: MLS308
        time.sleep(45 * 60)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def all_reduce_mean(tensor):
    if not dist.is_initialized():
        return tensor
    t = tensor.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_master(state, path):
    if is_main_process():  # ok: MLS307
        torch.save(state, path)
    synchronize("save")


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
