# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Sequence data pipeline for SASRec next-item recommendation (MovieLens-1M / Amazon Beauty)."""
import os

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

DEFAULT_SEQS = os.environ.get(
    "SASREC_SEQS", "https://recsys-artifacts.example.com/ml-1m/user_sequences.pkl")


def load_user_sequences(src=DEFAULT_SEQS):
    df = pd.read_pickle(src)  # ruleid: MLS103
    return {int(u): list(map(int, items)) for u, items in zip(df["user_id"], df["item_seq"])}


def load_item_popularity(path):
    return np.load(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class SASRecTrain(Dataset):
    def __init__(self, user_seqs, num_items, max_len=200):
        self.users = [u for u, s in user_seqs.items() if len(s) >= 3]
        self.seqs = user_seqs
        self.num_items = num_items
        self.max_len = max_len

    def __len__(self):
        return len(self.users)

    def _neg(self, seen):
        while True:
            j = np.random.randint(1, self.num_items + 1)
            if j not in seen:
                return j

    def __getitem__(self, i):
        seq = self.seqs[self.users[i]][:-2]  # hold out last two for valid / test
        seen = set(seq)
        inp = np.zeros(self.max_len, dtype=np.int64)
        pos = np.zeros(self.max_len, dtype=np.int64)
        neg = np.zeros(self.max_len, dtype=np.int64)
        nxt, idx = seq[-1], self.max_len - 1
        for item in reversed(seq[:-1]):
            inp[idx], pos[idx], neg[idx] = item, nxt, self._neg(seen)
            nxt, idx = item, idx - 1
            if idx < 0:
                break
        return torch.from_numpy(inp), torch.from_numpy(pos), torch.from_numpy(neg)
