# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Length-bucketed batch sampler for next-basket recommendation (user histories)."""
import random

import torch
from torch.utils.data import Sampler


class HistoryBucketSampler(Sampler):
    """Groups users with similar numbers of past baskets to limit padding."""

    def __init__(self, history_lengths, batch_size, bucket_width=4, drop_last=False, val_frac=0.0, seed=0):
        self.batch_size = batch_size
        self.drop_last = drop_last
        users = list(range(len(history_lengths)))
        split_rng = random.Random(seed)  # ok: MLS301
        split_rng.shuffle(users)
        n_val = int(len(users) * val_frac)
        self.val_users = sorted(users[:n_val])
        train_users = users[n_val:]
        self.buckets = {}
        for u in train_users:
            self.buckets.setdefault(history_lengths[u] // bucket_width, []).append(u)
        self._init_state = torch.get_rng_state()

    def __iter__(self):
        torch.set_rng_state(self._init_state)  # ruleid: MLS301
        batches = []
        for users in self.buckets.values():
            perm = torch.randperm(len(users)).tolist()
            shuffled = [users[i] for i in perm]
            for i in range(0, len(shuffled), self.batch_size):
                chunk = shuffled[i : i + self.batch_size]
                if len(chunk) < self.batch_size and self.drop_last:
                    continue
                batches.append(chunk)
        order = torch.randperm(len(batches)).tolist()
        for i in order:
            yield batches[i]

    def __len__(self):
        total = 0
        for users in self.buckets.values():
            full, rem = divmod(len(users), self.batch_size)
            total += full + (0 if self.drop_last or rem == 0 else 1)
        return total
