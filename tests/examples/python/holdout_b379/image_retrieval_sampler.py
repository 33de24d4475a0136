# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""P x K batch sampler and batch-hard triplet loss for metric-learning image retrieval (SOP/CUB)."""
import random
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler


class PKSampler(Sampler):
    def __init__(self, labels, p=32, k=4, seed=0):
        self.by_class = defaultdict(list)
        for idx, y in enumerate(labels):
            self.by_class[int(y)].append(idx)
        self.classes = [c for c, v in self.by_class.items() if len(v) >= 2]
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self._np_state = np.random.get_state()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)  # ok: MLS301
        np.random.set_state(self._np_state)  # ruleid: MLS301
        classes = self.classes[:]
        rng.shuffle(classes)
        for i in range(0, len(classes) - self.p + 1, self.p):
            batch = []
            for c in classes[i:i + self.p]:
                pool = self.by_class[c]
                batch.extend(np.random.choice(pool, self.k, replace=len(pool) < self.k).tolist())
            yield batch

    def __len__(self):
        return len(self.classes) // self.p


def batch_hard_triplet(emb, labels, margin=0.2):
    emb = F.normalize(emb, dim=1)
    dist = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    hardest_pos = dist.masked_fill(~same | eye, 0).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()
