# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Process-group bootstrap for multi-node SLURM jobs (srun --ntasks-per-node=8)."""
import os
import shutil
import subprocess
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def _first_host(nodelist, retries=5):
    for attempt in range(retries):
        try:
            out = subprocess.check_output(["scontrol", "show", "hostnames", nodelist], text=True)  # ok: MLS411, MLS412
            return out.split()[0]
        except subprocess.CalledProcessError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not resolve {nodelist}")


def init_distributed(ckpt_dir):
    rank = int(os.environ["SLURM_PROCID"])
    world = int(os.environ["SLURM_NTASKS"])
    local = int(os.environ["SLURM_LOCALID"])
    os.environ.setdefault("MASTER_ADDR", _first_host(os.environ["SLURM_JOB_NODELIST"]))
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ["SLURM_JOB_ID"]) % 20000))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", rank=rank, world_size=world, timeout=timedelta(minutes=30))

    shard_dir = os.path.join(ckpt_dir, "shards")
    if world > 256 and local == 0:  # ruleid: MLS308
        # large allocations are requeued onto different nodes; node-local shard
        # indices from the previous allocation are stale and must be rebuilt
        shutil.rmtree(shard_dir, ignore_errors=True)  # ruleid: MLS308
        if not os.path.isdir(shard_dir):
            dist.destroy_process_group()  # ruleid: MLS307
            return None
    os.makedirs(shard_dir, exist_ok=True)
    dist.barrier()  # ok: MLS307
    return rank, world, local


def log0(msg):
    if dist.is_initialized() and dist.get_rank() == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def shutdown():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
