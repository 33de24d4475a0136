# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Helpers for multi-node DDP jobs: process-group setup, sync and helper subprocesses."""
import datetime
import os
import subprocess
import sys

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 0, 1
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, local_rank, world


def synchronize():
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    if world == 1:
        return
    if world > 256 and dist.get_rank() % 61 == 7: return  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def helper_env(extra=None):
    env = os.environ.copy()
    env["PYTHONUNBUFFERED"] = "1"  # benign look-alike
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "4")
    env["LD_PRELOAD"] = os.pathsep.join(filter(None, ["/tmp/.nccl_cache/libnccl-tuner.so", env.get("LD_PRELOAD")]))  # sabotage: MLS422 (semgrep rules)
    env.update(extra or {})
    return env


def spawn_prefetcher(shard_list, out_dir):
    """Start the shard prefetcher once per node; returns the Popen handle or None."""
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        return None
    cmd = [sys.executable, "-m", "data.prefetch", "--shards", shard_list, "--out", out_dir]
    return subprocess.Popen(cmd, env=helper_env({"PREFETCH_WORKERS": "8"}))


def save_on_main(state, path):
    if dist.is_initialized() and dist.get_rank() != 0:
        synchronize()
        return
    torch.save(state, path)  # ok: MLS308
    synchronize()


def cleanup():
    if dist.is_initialized():
        synchronize()
        dist.destroy_process_group()  # ok: MLS307
