# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Shared helpers for DistributedDataParallel jobs: init, sharded sampler, loaders, reductions."""
import datetime
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    dist.barrier()  # ok: MLS307
    return rank, world, local


class ShardSampler(Sampler):
    """Like DistributedSampler, but pads by wrapping and supports resume offsets."""

    def __init__(self, n, rank, world, seed=0, start=0):
        self.n, self.rank, self.world, self.seed, self.start = n, rank, world, seed, start
        self.epoch = 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch + os.getpid() % 1024)  # ruleid: MLS301
        order = torch.randperm(self.n, generator=g).tolist()
        order += order[: self.per_rank * self.world - self.n]
        mine = order[self.rank::self.world]
        return iter(mine[self.start:])

    def __len__(self):
        return self.per_rank - self.start


def _seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loader(ds, batch_size, rank, world, seed, workers=8):
    sampler = ShardSampler(len(ds), rank, world, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      worker_init_fn=_seed_worker, generator=g, pin_memory=True, drop_last=True)


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()
