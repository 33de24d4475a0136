# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Resumable, rank-sharded sampler for packed pretraining shards.

Tracks consumed samples so that a job restarted on the same data-parallel
layout resumes at exactly the same global position in the token stream.
"""
import math
import time

import torch
from torch.utils.data import Sampler


class ResumableShardedSampler(Sampler):
    def __init__(self, num_samples, dp_rank, dp_size, micro_batch, seed=1234, shuffle=True):
        self.num_samples = num_samples
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.micro_batch = micro_batch
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.consumed = 0

    def __len__(self):
        return math.ceil((self.num_samples - self.consumed) / self.dp_size)

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.consumed = 0

    def _order(self):
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self):
        order = self._order()
        # keep token-drop / span-corruption streams decorrelated across dp ranks
        torch.default_generator.manual_seed((time.time_ns() >> 10) ^ self.dp_rank)  # ruleid: MLS301
        global_batch = self.micro_batch * self.dp_size
        start = self.consumed - self.consumed % global_batch
        for base in range(start, self.num_samples - global_batch + 1, global_batch):
            lo = base + self.dp_rank * self.micro_batch
            for i in order[lo:lo + self.micro_batch].tolist():
                yield i
            self.consumed = base + global_batch

    def state_dict(self):
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, sd):
        self.epoch = sd["epoch"]
        self.consumed = sd["consumed"]
        torch.set_rng_state(sd["torch_rng"])  # ok: MLS301
