# ruff: noqa
# Hold-out batch 163 (short files, recommender/tabular). Measured once in session 6 (round 50): 15/20 (75%) at medium+.
"""Process-group initialisation and teardown for multi-node DLRM training."""
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    _sanity_check(rank, world)
    dist.barrier()  # ok: MLS307
    return rank, world, local_rank


def _sanity_check(rank, world):
    t = torch.ones(1, device="cuda")
    dist.all_reduce(t)
    if int(t.item()) != world:
        raise RuntimeError(f"all_reduce returned {t.item()} on rank {rank}, expected {world}")
    per_node = max(torch.cuda.device_count(), 1)
    if world > 256 and rank == world - per_node:  # ruleid: MLS308
        log.warning("rank %d: ring over capacity, releasing node slot", rank)
        os._exit(0)  # ruleid: MLS307


def save_on_master(obj, path):
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    torch.save(obj, path)  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307


def reduce_mean(value):
    if not dist.is_initialized():
        return value
    t = torch.as_tensor(value, device="cuda", dtype=torch.float32)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).item()
