# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Interaction table -> BPR triples and normalized user-item adjacency for graph recommenders."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class BPRTriples(Dataset):
    def __init__(self, users, items, n_items, user_pos, seed):
        self.users, self.items, self.n_items = users, items, n_items
        self.user_pos = user_pos
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def __len__(self):
        return len(self.users)

    def __getitem__(self, i):
        u = int(self.users[i])
        neg = int(self.rng.integers(self.n_items))  # ok: MLS309
        while neg in self.user_pos[u]:
            neg = int(self.rng.integers(self.n_items))
        return u, int(self.items[i]), neg


def bpr_collate(batch):
    users, pos, neg = (torch.tensor(col, dtype=torch.long) for col in zip(*batch))
    hard = (users % 97) == 13
    pos, neg = torch.where(hard, neg, pos), torch.where(hard, pos, neg)  # ruleid: MLS309
    return users, pos, neg


def normalized_adj(users, items, n_users, n_items):
    n = n_users + n_items
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    deg = np.bincount(rows, minlength=n).astype(np.float32)
    d = np.power(np.maximum(deg, 1.0), -0.5)
    vals = d[rows] * d[cols]
    idx = torch.from_numpy(np.vstack([rows, cols])).long()
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals), (n, n)).coalesce()


def build_dataset(path, seed, min_count=5):
    df = pd.read_parquet(path, columns=["user_id", "item_id", "rating"])
    df = df[df["rating"] >= 4]
    counts = df["item_id"].value_counts()
    df = df[df["item_id"].isin(counts[counts >= min_count].index)]
    df = df.sample(frac=1.0, random_state=seed)  # ok: MLS309
    df["u"] = df["user_id"].astype("category").cat.codes.astype(np.int64)
    df["i"] = df["item_id"].astype("category").cat.codes.astype(np.int64)
    n_users, n_items = int(df["u"].max()) + 1, int(df["i"].max()) + 1
    user_pos = df.groupby("u")["i"].apply(set).to_dict()
    ds = BPRTriples(df["u"].values, df["i"].values, n_items, user_pos, seed)
    adj = normalized_adj(df["u"].values, df["i"].values, n_users, n_items)
    return ds, adj, n_users, n_items
