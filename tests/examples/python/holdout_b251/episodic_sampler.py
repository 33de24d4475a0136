# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Episodic N-way K-shot sampling for miniImageNet-style few-shot training."""
import random
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class EpisodeSampler(Sampler):
    def __init__(self, labels, n_way, k_shot, q_query, episodes, seed=0):
        self.by_class = defaultdict(list)
        for idx, y in enumerate(labels):
            self.by_class[int(y)].append(idx)
        self.classes = sorted(self.by_class)
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.episodes, self.seed, self.epoch = episodes, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.episodes

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        for _ in range(self.episodes):
            chosen = rng.choice(self.classes, self.n_way, replace=False)
            batch = []
            for c in chosen:
                batch.extend(rng.choice(self.by_class[c], self.k_shot + self.q_query, replace=False).tolist())
            yield batch


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def episodic_loader(dataset, labels, n_way=5, k_shot=5, q_query=15, episodes=1000, seed=0):
    sampler = EpisodeSampler(labels, n_way, k_shot, q_query, episodes, seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_sampler=sampler, num_workers=4,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True)


def split_episode(x, y, n_way, k_shot):
    per = x.size(0) // n_way
    x = x.view(n_way, per, *x.shape[1:])
    remap = torch.arange(n_way).unsqueeze(1).expand(n_way, per)
    xs, xq = x[:, :k_shot].reshape(-1, *x.shape[2:]), x[:, k_shot:].reshape(-1, *x.shape[2:])
    ys, yq = remap[:, :k_shot].reshape(-1), remap[:, k_shot:].reshape(-1)
    if random.random() < 0.5:  # ok: MLS309
        xs, xq = xs.flip(-1), xq.flip(-1)
    return xs, ys, xq, yq
