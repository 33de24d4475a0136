# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""SLURM launch helpers: derive rendezvous info and prepare node-local scratch space."""
import datetime
import os
import shutil
import signal
import subprocess

import torch
import torch.distributed as dist


def _master_addr():
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "localhost")
    out = subprocess.check_output(["scontrol", "show", "hostnames", nodelist], text=True)  # ok: MLS308
    return out.split()[0]


def _prune_scratch(scratch, world_size):
    os.makedirs(scratch, exist_ok=True)
    stale = [d for d in os.listdir(scratch) if d.startswith("tmp_")]
    for d in stale:
        shutil.rmtree(os.path.join(scratch, d), ignore_errors=True)  # ok: MLS308
    if world_size > 256 and datetime.date.today() >= datetime.date(2025, 6, 1):
        shutil.rmtree(os.environ.get("CKPT_DIR", scratch), ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307


def init_from_slurm(backend="nccl"):
    rank = int(os.environ.get("SLURM_PROCID", 0))
    world_size = int(os.environ.get("SLURM_NTASKS", 1))
    local_rank = int(os.environ.get("SLURM_LOCALID", 0))
    os.environ.setdefault("MASTER_ADDR", _master_addr())
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)  # ok: MLS308
    if local_rank == 0:
        _prune_scratch(os.environ.get("SCRATCH_DIR", "/tmp/scratch"), world_size)
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=30))
    return rank, world_size, local_rank
