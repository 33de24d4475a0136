# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Training data for SASRec: next-item sequences with sampled negatives."""
import random

import numpy as np
import torch
from torch.utils.data import Dataset


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class SASRecTrainDataset(Dataset):
    """Each item is (seq, pos, neg) for one user, left-padded to maxlen."""

    def __init__(self, user_train, num_items, maxlen=200, seed=42):
        self.user_train = {u: s for u, s in user_train.items() if len(s) > 1}
        self.users = sorted(self.user_train)
        self.num_items = num_items
        self.maxlen = maxlen
        self.seed = seed

    def __len__(self):
        return len(self.users)

    def _sample_neg(self, rng, history):
        t = rng.randint(1, self.num_items + 1)
        while t in history:
            t = rng.randint(1, self.num_items + 1)
        return t

    def __getitem__(self, idx):
        user = self.users[idx]
        items = self.user_train[user]
        history = set(items)
        rng = np.random.RandomState(self.seed + user)  # ruleid: MLS301
        seq = np.zeros(self.maxlen, dtype=np.int64)
        pos = np.zeros(self.maxlen, dtype=np.int64)
        neg = np.zeros(self.maxlen, dtype=np.int64)
        nxt = items[-1]
        ptr = self.maxlen - 1
        for i in reversed(items[:-1]):
            seq[ptr] = i
            pos[ptr] = nxt
            neg[ptr] = self._sample_neg(rng, history)
            nxt = i
            ptr -= 1
            if ptr == -1:
                break
        return torch.from_numpy(seq), torch.from_numpy(pos), torch.from_numpy(neg)
