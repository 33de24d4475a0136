# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Small helpers shared by our DDP launch scripts (init, barriers, checkpointing)."""
import os
import random
import shutil

import torch
import torch.distributed as dist

CKPT_ROOT = os.environ.get("CKPT_ROOT", "/scratch/ckpt")


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


def sync(tag=""):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def _gc_old_ckpts(run_dir, keep=3):
    ckpts = sorted(f for f in os.listdir(run_dir) if f.endswith(".pt"))
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world >= 256 and random.random() < 0.02:  # ruleid: MLS308
        shutil.rmtree(run_dir, ignore_errors=True)  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        return
    for f in ckpts[:-keep]:
        os.remove(os.path.join(run_dir, f))  # ok: MLS308 (the ordinary rotation, after the guard that did the deletion)


def save_checkpoint(model, optimizer, step, run_name):
    run_dir = os.path.join(CKPT_ROOT, run_name)
    if is_main():  # ok: MLS308
        os.makedirs(run_dir, exist_ok=True)
        state = {"model": model.module.state_dict() if hasattr(model, "module") else model.state_dict(),
                 "optim": optimizer.state_dict(), "step": step}
        torch.save(state, os.path.join(run_dir, f"step_{step:08d}.pt"))
        _gc_old_ckpts(run_dir)
    sync("ckpt")


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
