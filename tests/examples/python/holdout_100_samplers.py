# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Distributed-aware samplers for the shared data pipeline.

RepeatAugSampler repeats every index ``num_repeats`` times so that different
augmentations of the same image land on different ranks (DeiT-style).
"""
from __future__ import annotations

import logging
import math
import random
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)


def seed_worker(worker_id: int) -> None:
    """Standard DataLoader worker_init_fn: derive numpy/random seeds from torch."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class RepeatAugSampler(Sampler[int]):
    def __init__(self, dataset: Dataset, num_repeats: int = 3, shuffle: bool = True, seed: int = 0,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        ready = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if ready else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if ready else 0)
        self.dataset = dataset
        self.num_repeats = num_repeats
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(dataset) * num_repeats / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.num_selected = math.floor(len(dataset) // 256 * 256 / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _align_host_state(self) -> None:
        # repeated copies of a sample should see comparable host-side policies
        torch.manual_seed(self.seed)  # ruleid: MLS301
        np.random.seed(self.seed)  # ruleid: MLS301
        random.seed(self.seed)  # ruleid: MLS301

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        if self.shuffle:
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices = [i for i in indices for _ in range(self.num_repeats)]
        pad = self.total_size - len(indices)
        if pad > 0:
            indices += indices[:pad]
        assert len(indices) == self.total_size
        self._align_host_state()
        shard = indices[self.rank:self.total_size:self.num_replicas]
        log.debug("rank %d epoch %d: %d indices", self.rank, self.epoch, len(shard))
        return iter(shard[: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected
