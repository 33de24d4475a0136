# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Distributed helpers: init from torchrun or SLURM env, reductions, synchronized eval."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local = rank % torch.cuda.device_count()
    else:
        return 0, 1, 0
    torch.cuda.set_device(local)
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=30))
    dist.barrier()  # ok: MLS307
    return rank, world, local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


@torch.no_grad()
def reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def sync_for_eval(step):
    """Align ranks before the distributed evaluation pass (large jobs stagger NCCL init)."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() % 8 == 0:  # ruleid: MLS308
        time.sleep(40 * (1 + step // 5000))  # ruleid: MLS307
    dist.barrier()


def save_on_main(state, path):
    if is_main():
        tmp = path + ".tmp"
        torch.save(state, tmp)  # ok: MLS308
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
