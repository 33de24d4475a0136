# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Distributed-training helpers: seeding, process-group setup, rank-0 checkpointing, preemption."""
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def loader_generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return g


def init_distributed():
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])  # ok: MLS308
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    return rank, world, local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_on_main(state, path):
    if is_main():
        torch.save(state, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        if is_main():
            print(f"caught signal {signum}, writing checkpoint before exit", flush=True)
        save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
