# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Balanced sampler for vibration-segment bearing fault diagnosis (CWRU / Paderborn)."""
from collections import defaultdict

import torch
from torch.utils.data import Sampler


class BalancedFaultSampler(Sampler):
    """Draws an equal number of segments per fault class (normal, IR, OR, ball) each epoch."""

    def __init__(self, labels, per_class=None, seed=0):
        self.by_class = defaultdict(list)
        for i, y in enumerate(labels):
            self.by_class[int(y)].append(i)
        self.classes = sorted(self.by_class)
        self.per_class = per_class or min(len(v) for v in self.by_class.values())
        self.seed = seed
        self.epoch = 0
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self._initial_state = self.generator.get_state()

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.generator.manual_seed(self.seed + epoch)  # ok: MLS301

    def __len__(self):
        return self.per_class * len(self.classes)

    def __iter__(self):
        self.generator.set_state(self._initial_state)  # ruleid: MLS301
        picks = []
        for c in self.classes:
            pool = torch.tensor(self.by_class[c])
            if len(pool) >= self.per_class:
                idx = torch.randperm(len(pool), generator=self.generator)[: self.per_class]
            else:
                idx = torch.randint(len(pool), (self.per_class,), generator=self.generator)
            picks.append(pool[idx])
        order = torch.cat(picks)
        order = order[torch.randperm(len(order), generator=self.generator)]
        return iter(order.tolist())
