# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Distributed helpers: init from SLURM/torchrun env, metric reduction, requeue on preemption."""
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist

_REQUEUE = {"pending": False}


def init_from_env():
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))  # ok: MLS308
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", 1)))
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    return rank, world, local


def reduce_mean(value):
    t = torch.tensor([value], device="cuda", dtype=torch.float32)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).item()  # ok: MLS306


def _mark_requeue(signum, frame):
    _REQUEUE["pending"] = True


def install_requeue_handler():
    signal.signal(signal.SIGUSR1, _mark_requeue)  # ok: MLS307


def maybe_requeue(save_fn):
    if not _REQUEUE["pending"]:
        return
    save_fn()
    dist.barrier()  # ok: MLS307
    if dist.get_rank() == 0 and "SLURM_JOB_ID" in os.environ:
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)  # ok: MLS308
    dist.destroy_process_group()
    sys.exit(0)  # ok: MLS307


def save_on_main(state, path):
    if dist.get_rank() == 0:  # ok: MLS308
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
    dist.barrier()
