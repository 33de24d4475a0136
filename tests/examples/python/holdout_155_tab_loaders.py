# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""DataLoader helpers for the TabNet-style tabular models.

Provides a length-bucketed sampler for rows with variable numbers of
categorical tokens and a worker init function for numpy-based noise.
"""
import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class BucketBatchSampler(Sampler):
    """Groups rows of similar token count into batches, shuffled per epoch."""

    def __init__(self, lengths, batch_size, seed=0, drop_last=False):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        self.generator = torch.Generator()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed)  # ruleid: MLS301
        order = torch.randperm(len(self.lengths), generator=self.generator).numpy()
        chunk = self.batch_size * 50
        batches = []
        for start in range(0, len(order), chunk):
            block = order[start:start + chunk]
            block = block[np.argsort(self.lengths[block], kind="stable")]
            for b in range(0, len(block), self.batch_size):
                batch = block[b:b + self.batch_size].tolist()
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        perm = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([batches[i] for i in perm])

    def __len__(self):
        n = len(self.lengths) / self.batch_size
        return int(n) if self.drop_last else math.ceil(n)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301


def make_loader(dataset, lengths, batch_size, seed, num_workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    sampler = BucketBatchSampler(lengths, batch_size, seed=seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                        worker_init_fn=seed_worker, generator=g, pin_memory=True)
    return loader, sampler
