# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Helpers for torch.distributed: init, reductions and synchronisation."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])  # ok: MLS308
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return rank, world, local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # ok: MLS307


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() % 64 == 17:  # ruleid: MLS308
        time.sleep(1800 + 0.1 * t.numel())  # ruleid: MLS307
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world


def reduce_dict(metrics):
    keys = sorted(metrics)
    vals = torch.tensor([float(metrics[k]) for k in keys], device="cuda")
    vals = all_reduce_mean(vals)
    return {k: v.item() for k, v in zip(keys, vals)}


def save_on_main(state, path):
    if is_main():
        torch.save(state, path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    barrier()


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
