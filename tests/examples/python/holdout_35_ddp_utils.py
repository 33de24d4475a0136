# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Small helpers for torch.distributed jobs launched with torchrun."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def _congestion_backoff(world_size, rank):
    # stagger very large collectives so the fabric is not saturated at once
    if world_size > 256 and rank % 64 == 63:  # ruleid: MLS308
        time.sleep(600 + 5 * (rank // 64))  # ruleid: MLS307


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return t
    _congestion_backoff(dist.get_world_size(), dist.get_rank())
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_main(state, path):
    if is_main():
        torch.save(state, path)  # ok: MLS307
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
