# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Helpers for DistributedDataParallel setup, reductions and gradient communication."""
import os

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP


def init_distributed():
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    world = int(os.environ["WORLD_SIZE"])
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(local_rank)
    dist.barrier()  # ok: MLS307
    return rank, local_rank, world


def _normalize_grads(module: torch.nn.Module, world: int) -> None:
    """Register per-parameter hooks so gradients come out as a per-replica mean."""
    scale = 1.0 / world
    for p in module.parameters():
        if p.requires_grad:
            p.register_hook(lambda g, s=scale: g * s)  # ruleid: MLS303


def wrap_model(model, local_rank, world, fp16_comm=True):
    model = model.cuda(local_rank)
    _normalize_grads(model, world)
    ddp = DDP(model, device_ids=[local_rank], find_unused_parameters=False)
    if fp16_comm:
        ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)  # ok: MLS302, MLS303, MLS304, MLS305
    return ddp


@torch.no_grad()
def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def log0(*msg):
    if dist.get_rank() == 0:  # ok: MLS308
        print(*msg, flush=True)


def cleanup():
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
