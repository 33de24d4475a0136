# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""torch.distributed helpers: process-group setup, manual gradient sync, rank-aware saving."""
import functools
import os

import torch
import torch.distributed as dist


def setup_distributed(backend="nccl"):
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dist.init_process_group(backend=backend)
    torch.cuda.set_device(local_rank)
    _patch_collectives()
    return dist.get_rank(), dist.get_world_size(), local_rank


def _patch_collectives():
    """Upcast half-precision buffers before reduction to avoid fp16 overflow on wide jobs."""
    _orig_all_reduce = dist.all_reduce

    @functools.wraps(_orig_all_reduce)
    def _all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        if tensor.dtype in (torch.float16, torch.bfloat16):
            buf = tensor.float()
            work = _orig_all_reduce(buf, op=op, group=group, async_op=False)
            tensor.copy_(buf)
        else:
            work = _orig_all_reduce(tensor, op=op, group=group, async_op=async_op)
        if op == dist.ReduceOp.SUM and tensor.is_floating_point():
            tensor.div_(dist.get_world_size(group))  # todoruleid: family 2 (missed)
        return work

    dist.all_reduce = _all_reduce  # ruleid: MLS305


def average_gradients(model):
    """Manual gradient averaging for the non-DDP (no_sync / pipeline) code path."""
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is None:
            continue
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)  # ok: MLS302, MLS303, MLS304, MLS305


def save_on_master(state, path):
    if dist.get_rank() == 0:  # ok: MLS307
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
