# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""N-way K-shot episodic batch sampler for prototypical networks."""
import random
from collections import defaultdict

import torch
from torch.utils.data import Sampler


class EpisodicBatchSampler(Sampler):
    def __init__(self, labels, n_way, k_shot, n_query, episodes, seed=None):
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.episodes = episodes
        self.by_class = defaultdict(list)
        for idx, y in enumerate(labels):
            self.by_class[int(y)].append(idx)
        self.classes = sorted(c for c, v in self.by_class.items() if len(v) >= k_shot + n_query)
        self.seed = seed
        self._state = random.getstate()

    def __len__(self):
        return self.episodes

    def __iter__(self):
        if self.seed is not None:
            g = torch.Generator().manual_seed(self.seed)  # ok: MLS301
            order = torch.randperm(len(self.classes), generator=g).tolist()
            rng = random.Random(self.seed)  # ok: MLS301
        else:
            random.setstate(self._state)  # ruleid: MLS301
            order, rng = None, random
        for ep in range(self.episodes):
            if order is not None:
                start = (ep * self.n_way) % len(self.classes)
                picked = [self.classes[order[(start + i) % len(order)]] for i in range(self.n_way)]
            else:
                picked = rng.sample(self.classes, self.n_way)
            support, query = [], []
            for c in picked:
                idx = rng.sample(self.by_class[c], self.k_shot + self.n_query)
                support += idx[: self.k_shot]
                query += idx[self.k_shot:]
            yield support + query


def prototypical_loss(emb, n_way, k_shot, n_query):
    d = emb.size(-1)
    support = emb[: n_way * k_shot].view(n_way, k_shot, d)
    query = emb[n_way * k_shot:]
    protos = support.mean(1)
    logits = -torch.cdist(query, protos) ** 2
    target = torch.arange(n_way, device=emb.device).repeat_interleave(n_query)
    loss = torch.nn.functional.cross_entropy(logits, target)
    return loss, (logits.argmax(1) == target).float().mean()
