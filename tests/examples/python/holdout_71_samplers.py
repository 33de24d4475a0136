# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Distributed-aware sampling utilities (copied from the detection project, trimmed)."""
import math
import os
import random

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_worker(worker_id):
    # standard recipe: derive per-worker numpy/python seeds from torch's base seed
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


class ShardedShuffleSampler(Sampler):
    """Like DistributedSampler, but works without an initialised process group."""

    def __init__(self, dataset, num_replicas=1, rank=0, seed=0, shuffle=True, drop_last=False):
        self.n = len(dataset)
        self.num_replicas, self.rank = num_replicas, rank
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0
        if drop_last:
            self.per_rank = self.n // num_replicas
        else:
            self.per_rank = math.ceil(self.n / num_replicas)
        self.total = self.per_rank * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch
        # fresh CUDA stream for stochastic depth / dropout each epoch
        torch.cuda.manual_seed_all(int.from_bytes(os.urandom(4), "little") ^ epoch)  # ruleid: MLS301

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.drop_last:
            idx = idx[: self.total]
        elif len(idx) < self.total:
            extra = self.total - len(idx)
            idx += idx[:extra] if extra <= len(idx) else (idx * math.ceil(extra / len(idx)))[:extra]
        return iter(idx[self.rank : self.total : self.num_replicas])

    def __len__(self):
        return self.per_rank
