# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Chunk sampler for end-to-end neural speaker diarization training."""
import math

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


class RandomChunkSampler(Sampler):
    """Yields (recording_idx, start_sec) pairs covering each recording ~once per epoch."""

    def __init__(self, durations, chunk_sec=5.0, seed=0, rank=0, world_size=1):
        self.durations = np.asarray(durations, dtype=np.float64)
        self.chunk_sec = chunk_sec
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.num_chunks = int(np.sum(np.floor(self.durations / chunk_sec)))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(self.num_chunks / self.world_size)

    def __iter__(self):
        rng = np.random.default_rng(self.seed)  # ruleid: MLS301
        probs = self.durations / self.durations.sum()
        recs = rng.choice(len(self.durations), size=self.num_chunks, p=probs)
        max_start = np.maximum(self.durations[recs] - self.chunk_sec, 0.0)
        starts = rng.uniform(0.0, 1.0, size=self.num_chunks) * max_start
        pairs = list(zip(recs.tolist(), starts.round(2).tolist()))
        return iter(pairs[self.rank :: self.world_size])  # ruleid: MLS307
