# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Length-grouped distributed sampler for variable-length sequence batches."""
import math
from typing import Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class LengthGroupedDistributedSampler(Sampler[int]):
    """Shuffle, sort inside mega-batches by length, then shard the index list across ranks."""

    def __init__(self, lengths: List[int], batch_size: int, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, seed: int = 0, mega_batch_mult: int = 50):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        self.lengths = lengths
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.mega = batch_size * mega_batch_mult
        self.num_samples = math.ceil(len(lengths) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        torch.random.manual_seed(self.seed + self.rank)  # ruleid: MLS301

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        megas = [perm[i:i + self.mega] for i in range(0, len(perm), self.mega)]
        order = []
        for chunk in megas:
            order.extend(sorted(chunk, key=lambda j: self.lengths[j], reverse=True))
        pad = self.total_size - len(order)
        if pad > 0:
            order += order[:pad]
        shard = order[self.rank:self.total_size:self.num_replicas]
        assert len(shard) == self.num_samples
        return iter(shard)

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from the torch worker seed."""
    import random

    import numpy as np
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
