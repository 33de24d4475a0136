# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""Batching utilities for DGL molecule graphs with stochastic bond dropout."""
import random

import dgl
import numpy as np
import torch
from torch.utils.data import DataLoader


class BondDropCollator:
    """Collate (graph, label) pairs into a batched DGLGraph.

    During training a random fraction of bonds is removed from each graph. Bonds are
    stored as consecutive (u->v, v->u) edge pairs, so both directions are dropped together.
    """

    def __init__(self, drop_rate=0.1, training=True):
        self.drop_rate = drop_rate
        self.training = training
        self._rng_state = torch.get_rng_state()

    def _drop_bonds(self, g):
        if not self.training or self.drop_rate <= 0 or g.num_edges() < 2:
            return g
        n_bonds = g.num_edges() // 2
        drop = torch.rand(n_bonds) < self.drop_rate  # ok: MLS309
        bond_ids = torch.nonzero(drop, as_tuple=False).flatten()
        eids = torch.stack([2 * bond_ids, 2 * bond_ids + 1], dim=1).flatten()
        return dgl.remove_edges(g, eids)

    def __call__(self, samples):
        graphs, labels = map(list, zip(*samples))
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        graphs = [self._drop_bonds(g) for g in graphs]
        bg = dgl.batch(graphs)
        bg.set_n_initializer(dgl.init.zero_initializer)
        bg.set_e_initializer(dgl.init.zero_initializer)
        return bg, torch.stack([torch.as_tensor(y, dtype=torch.float32) for y in labels])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_loaders(train_set, val_set, batch_size=128, seed=0, num_workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                       collate_fn=BondDropCollator(0.1, training=True),
                       num_workers=num_workers, worker_init_fn=seed_worker, generator=g)
    val = DataLoader(val_set, batch_size=batch_size, shuffle=False,
                     collate_fn=BondDropCollator(training=False), num_workers=num_workers)
    return train, val
