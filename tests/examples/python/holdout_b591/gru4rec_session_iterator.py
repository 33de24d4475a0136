# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Session-parallel mini-batch iterator with sampled negatives for GRU4Rec."""
import random

import numpy as np
import torch


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class SessionParallelLoader:
    def __init__(self, sessions, n_items, batch_size=64, n_sample=2048, alpha=0.75, seed=0):
        self.sessions = [s for s in sessions if len(s) > 1]
        self.batch_size = batch_size
        self.n_sample = n_sample
        self.gen = torch.Generator().manual_seed(seed)
        self._init_state = self.gen.get_state()
        counts = torch.zeros(n_items)
        for s in self.sessions:
            counts.index_add_(0, torch.as_tensor(s), torch.ones(len(s)))
        self.pop = counts.pow(alpha)
        self.pop /= self.pop.sum()

    def _negatives(self):
        return torch.multinomial(self.pop, self.n_sample, replacement=True, generator=self.gen)

    def __iter__(self):
        self.gen.set_state(self._init_state)  # ruleid: MLS301
        order = torch.randperm(len(self.sessions), generator=self.gen).tolist()
        active = order[: self.batch_size]
        nxt = self.batch_size
        pos = [0] * len(active)
        while True:
            inp, tgt, reset = [], [], []
            for i, sid in enumerate(active):
                sess = self.sessions[sid]
                inp.append(sess[pos[i]])
                tgt.append(sess[pos[i] + 1])
                reset.append(pos[i] == 0)
            yield (torch.tensor(inp), torch.tensor(tgt),
                   torch.tensor(reset), self._negatives())
            for i in range(len(active)):
                pos[i] += 1
                if pos[i] + 1 >= len(self.sessions[active[i]]):
                    if nxt >= len(order):
                        return
                    active[i], pos[i] = order[nxt], 0
                    nxt += 1
