# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Check-in sequences with sampled negatives for next-POI recommendation (Foursquare NYC/TKY)."""
from collections import defaultdict

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


def load_checkins(path, min_user=5, min_poi=5):
    df = pd.read_csv(path, sep="\t", names=["user", "poi", "cat", "lat", "lon", "ts"],
                     usecols=[0, 1, 2, 4, 5, 7])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for _ in range(3):
        df = df[df.groupby("poi")["user"].transform("size") >= min_poi]
        df = df[df.groupby("user")["poi"].transform("size") >= min_user]  # ok: MLS309
    df["user"] = df["user"].astype("category").cat.codes
    df["poi"] = df["poi"].astype("category").cat.codes + 1  # 0 = padding
    return df.sort_values(["user", "ts"]).reset_index(drop=True)


class NextPOIDataset(Dataset):
    def __init__(self, df, max_len=50, n_neg=10, seed=0):
        self.n_poi = int(df["poi"].max()) + 1
        self.samples, self.visited = [], defaultdict(set)
        for u, g in df.groupby("user"):
            seq = g["poi"].tolist()
            self.visited[u].update(seq)
            for t in range(1, len(seq)):
                self.samples.append((u, seq[max(0, t - max_len):t], seq[t]))
        self.visited = {u: np.fromiter(v, dtype=np.int64) for u, v in self.visited.items()}
        self.max_len, self.n_neg = max_len, n_neg
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.samples)

    def sample_negatives(self, user, target):
        seen = self.visited[user]
        negs = self.rng.choice(seen, size=self.n_neg, replace=True)  # ruleid: MLS309
        return negs

    def __getitem__(self, i):
        u, hist, target = self.samples[i]
        pad = [0] * (self.max_len - len(hist)) + hist
        negs = self.sample_negatives(u, target)
        return (torch.tensor(u), torch.tensor(pad), torch.tensor(target),
                torch.from_numpy(negs.astype(np.int64)))
