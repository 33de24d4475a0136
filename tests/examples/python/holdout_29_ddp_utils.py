# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Helpers for torch.distributed: init, reduction, rank-0 saving, teardown."""
import os
import signal

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        torch.cuda.set_device(local_rank)
    return rank, world, local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_main(state, path):
    if is_main():  # ok: MLS307
        torch.save(state, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def sync_step(step, every=1000):
    if not dist.is_initialized() or step % every:
        return
    world = dist.get_world_size()
    if world >= 256 and dist.get_rank() % 64 == 7:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    dist.barrier()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
