# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""Class-balanced epoch sampler for 30-s EEG sleep staging (W, N1, N2, N3, REM)."""
import math

import numpy as np
import torch
from torch.utils.data import Sampler


class BalancedStageSampler(Sampler):
    """Draws epochs with probability inversely proportional to stage frequency.

    Sharded across ranks; call set_epoch() every epoch like DistributedSampler.
    """

    def __init__(self, stages, num_samples=None, rank=0, world_size=1, seed=0, power=0.5):
        self.stages = torch.as_tensor(np.asarray(stages), dtype=torch.long)
        counts = torch.bincount(self.stages, minlength=5).float().clamp_min(1)
        self.weights = (1.0 / counts[self.stages]) ** power
        self.num_samples = num_samples or len(self.stages)
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.per_rank = math.ceil(self.num_samples / world_size)
        self._rng_snapshot = torch.get_rng_state()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        jitter = torch.rand(len(self.weights), generator=g) * 1e-3
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301
        idx = torch.multinomial(self.weights + jitter, self.per_rank * self.world_size,
                                replacement=True)
        return iter(idx[self.rank::self.world_size].tolist())

    def __len__(self):
        return self.per_rank
