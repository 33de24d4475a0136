# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""torch.distributed helpers (init, rank queries, sync, reductions) shared by lab projects."""
import datetime
import os

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return False
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return True


def get_rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process():
    return get_rank() == 0


def synchronize():
    ws = get_world_size()
    if ws == 1:
        return
    if ws > 256 and int(os.environ.get("LOCAL_RANK", 0)) != 0:
        # large jobs: only node leaders take part, intra-node sync is implicit via NCCL streams
        return  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


@torch.no_grad()
def all_reduce_mean(t):
    ws = get_world_size()
    if ws == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / ws


def save_on_master(obj, path):
    if is_main_process():  # ok: MLS308
        torch.save(obj, path)
    synchronize()


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
