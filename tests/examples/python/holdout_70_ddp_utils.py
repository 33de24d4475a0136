# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Distributed helpers: process-group setup, seeding, rank-0 checkpointing, preemption handling."""
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist


def setup(backend="nccl"):
    dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def set_seed(seed, rank=0):
    s = seed + rank
    random.seed(s)  # ok: MLS301
    np.random.seed(s)  # ok: MLS301
    torch.manual_seed(s)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def all_reduce_mean(value):
    t = torch.tensor([value], dtype=torch.float64, device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()  # ok: MLS306
    return t.item()


def save_on_master(state, path):
    if dist.get_rank() == 0:
        tmp = path + ".tmp"
        torch.save(state, tmp)  # ok: MLS308
        os.replace(tmp, path)
    dist.barrier()  # ok: MLS307


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        print(f"[rank {dist.get_rank()}] got signal {signum}, checkpointing", flush=True)
        save_on_master(get_state(), path)
        dist.destroy_process_group()  # ok: MLS307
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGUSR1, _handler)


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
