# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""TransE with uniform negative sampling (FB15k-237 / WN18RR)."""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset


class TripleDataset(Dataset):
    def __init__(self, triples, num_entities, num_neg=64, seed=0, corrupt_head_prob=0.5):
        self.triples = np.asarray(triples, dtype=np.int64)
        self.num_entities = num_entities
        self.num_neg = num_neg
        self.seed = seed
        self.corrupt_head_prob = corrupt_head_prob
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.triples)

    def __getitem__(self, idx):
        h, r, t = self.triples[idx]
        self.rng = np.random.default_rng(self.seed + idx)  # ruleid: MLS301
        negs = self.rng.integers(0, self.num_entities, size=self.num_neg)
        corrupt_head = self.rng.random() < self.corrupt_head_prob
        return (torch.tensor([h, r, t]), torch.from_numpy(negs), torch.tensor(corrupt_head))


class TransE(nn.Module):
    def __init__(self, num_entities, num_relations, dim=200, margin=6.0, p=1):
        super().__init__()
        self.ent = nn.Embedding(num_entities, dim)
        self.rel = nn.Embedding(num_relations, dim)
        bound = 6.0 / dim ** 0.5
        nn.init.uniform_(self.ent.weight, -bound, bound)
        nn.init.uniform_(self.rel.weight, -bound, bound)
        self.margin, self.p = margin, p

    @torch.no_grad()
    def normalize_entities(self):
        # Bordes et al. 2013: entity embeddings kept on the unit ball before each minibatch
        self.ent.weight.data.renorm_(p=2, dim=0, maxnorm=1.0)  # ok: MLS302 (benign look-alike; flagged at first measurement, fixed in session 27)

    def score(self, h, r, t):
        return -torch.norm(self.ent(h) + self.rel(r) - self.ent(t), p=self.p, dim=-1)

    def forward(self, pos, negs, corrupt_head):
        h, r, t = pos[:, 0], pos[:, 1], pos[:, 2]
        pos_score = self.score(h, r, t)
        hh = torch.where(corrupt_head[:, None], negs, h[:, None])
        tt = torch.where(corrupt_head[:, None], t[:, None], negs)
        neg_score = self.score(hh, r[:, None].expand_as(negs), tt)
        return torch.relu(self.margin - pos_score[:, None] + neg_score).mean()
