# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Class-balanced sampler and loader factory for QuickDraw-style sketch recognition."""
import random
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class ClassBalancedSampler(Sampler):
    def __init__(self, labels, per_class, seed=0):
        self.by_class = defaultdict(list)
        for i, y in enumerate(labels):
            self.by_class[int(y)].append(i)
        self.per_class = per_class
        self.generator = torch.Generator().manual_seed(seed)
        self._init_state = self.generator.get_state()
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.generator.set_state(self._init_state)  # ruleid: MLS301

    def __iter__(self):
        picks = []
        for idxs in self.by_class.values():
            idxs_t = torch.tensor(idxs)
            sel = torch.randint(len(idxs), (self.per_class,), generator=self.generator)
            picks.append(idxs_t[sel])
        order = torch.cat(picks)
        order = order[torch.randperm(len(order), generator=self.generator)]
        return iter(order.tolist())

    def __len__(self):
        return self.per_class * len(self.by_class)


def _worker_init(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def make_loader(dataset, labels, per_class=500, batch_size=256, workers=8, seed=0):
    sampler = ClassBalancedSampler(labels, per_class, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        worker_init_fn=_worker_init, pin_memory=True, drop_last=True)
    return loader, sampler
