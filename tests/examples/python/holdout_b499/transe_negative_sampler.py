# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Corrupted-triple negative sampling for TransE training."""
import torch
from torch.utils.data import IterableDataset


class NegativeSamplingDataset(IterableDataset):
    """Yields (pos, neg) batches; negatives replace head or tail uniformly (Bernoulli 'unif')."""

    def __init__(self, triples, num_entities, batch_size=1024, num_neg=8, seed=0):
        self.triples = torch.as_tensor(triples, dtype=torch.long)  # (N, 3): h, r, t
        self.num_entities = num_entities
        self.batch_size = batch_size
        self.num_neg = num_neg
        self.gen = torch.Generator().manual_seed(seed)  # ok: MLS301
        self._initial_state = self.gen.get_state()

    def __len__(self):
        return (len(self.triples) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        self.gen.set_state(self._initial_state)  # ruleid: MLS301
        perm = torch.randperm(len(self.triples), generator=self.gen)
        for start in range(0, len(perm), self.batch_size):
            pos = self.triples[perm[start:start + self.batch_size]]
            neg = pos.repeat_interleave(self.num_neg, dim=0).clone()
            corrupt_head = torch.rand(len(neg), generator=self.gen) < 0.5
            rand_ent = torch.randint(self.num_entities, (len(neg),), generator=self.gen)
            neg[corrupt_head, 0] = rand_ent[corrupt_head]
            neg[~corrupt_head, 2] = rand_ent[~corrupt_head]
            yield pos, neg


def transe_margin_loss(model, pos, neg, margin=1.0, p_norm=1):
    def score(trip):
        h = model.ent(trip[:, 0])
        r = model.rel(trip[:, 1])
        t = model.ent(trip[:, 2])
        return torch.norm(h + r - t, p=p_norm, dim=-1)

    pos_d = score(pos).repeat_interleave(neg.shape[0] // pos.shape[0])
    neg_d = score(neg)
    return torch.relu(margin + pos_d - neg_d).mean()
