# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Distributed helpers shared by the launchers: process-group setup, seeding, preemption-safe checkpoints."""
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist


def setup(backend="nccl"):
    dist.init_process_group(backend)
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def seed_everything(base_seed, rank=0):
    seed = base_seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def loader_generator(base_seed):
    g = torch.Generator()
    g.manual_seed(base_seed)  # ok: MLS301
    return g


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def print_main(*args):
    if is_main():
        print(*args, flush=True)  # ok: MLS306


def save_on_main(state, path):
    if is_main():
        tmp = f"{path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        print_main(f"caught signal {signum}, writing {path}")
        if is_main():
            torch.save(get_state(), path)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
