# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Length-bucketed sampler for the query autocompletion LM (prefix -> completion pairs)."""
import math

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


class BucketedPrefixSampler(Sampler):
    """Groups queries of similar token length into batches and shards the batches across ranks."""

    def __init__(self, lengths, batch_size, bucket_width=4, seed=0, drop_last=True):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.bucket_width = bucket_width
        self.drop_last = drop_last
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rng = np.random.default_rng(seed)  # ok: MLS301
        self._rng_state = self.rng.bit_generator.state
        self.epoch = 0

    def set_epoch(self, epoch):
        # every rank must draw the same permutation, otherwise shards overlap
        self.epoch = epoch
        self.rng.bit_generator.state = self._rng_state  # todoruleid: family 1 (missed)

    def _batches(self):
        buckets = {}
        for idx in self.rng.permutation(len(self.lengths)):
            buckets.setdefault(int(self.lengths[idx]) // self.bucket_width, []).append(int(idx))
        batches = []
        for members in buckets.values():
            for i in range(0, len(members), self.batch_size):
                b = members[i:i + self.batch_size]
                if len(b) == self.batch_size or not self.drop_last:
                    batches.append(b)
        order = self.rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __iter__(self):
        batches = self._batches()
        per_rank = len(batches) // self.world if self.drop_last else math.ceil(len(batches) / self.world)
        for b in batches[self.rank::self.world][:per_rank]:
            yield b

    def __len__(self):
        n = sum(len(v) // self.batch_size for v in self._bucket_sizes().values())
        return n // self.world

    def _bucket_sizes(self):
        sizes = {}
        for l in self.lengths:
            sizes.setdefault(int(l) // self.bucket_width, []).append(l)
        return sizes
