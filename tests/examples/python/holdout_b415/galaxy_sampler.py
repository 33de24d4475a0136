# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""Class-balanced sampling for Galaxy10 / Galaxy Zoo morphology classification."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class MorphologyBalancedSampler(Sampler):
    """Draws indices with probability inversely proportional to class frequency."""

    def __init__(self, labels, num_samples=None, seed=0, power=0.5):
        labels = torch.as_tensor(labels)
        counts = torch.bincount(labels).float().clamp_min(1.0)
        self.weights = (1.0 / counts[labels]) ** power
        self.num_samples = num_samples or len(labels)
        self.seed, self.epoch = seed, 0
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self._initial_state = self.generator.get_state()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        self.generator.set_state(self._initial_state)  # ruleid: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True,
                                generator=self.generator)
        return iter(idx.tolist())


def _worker_init(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_train_loader(dataset, labels, batch_size=128, workers=8, seed=0):
    sampler = MorphologyBalancedSampler(labels, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        worker_init_fn=_worker_init, generator=g, pin_memory=True,
                        persistent_workers=workers > 0, drop_last=True)
    return loader, sampler
