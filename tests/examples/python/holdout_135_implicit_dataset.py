# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Pointwise implicit-feedback dataset (clicks as positives, sampled negatives) for a BCE ranker."""
import os

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

_WARM_ITEMS = torch.tensor([int(x) for x in os.environ.get("RECO_WARM_ITEMS", "40213,40214,51877,51880").split(",")])


class ImplicitPairs(Dataset):
    def __init__(self, clicks_path, num_items, neg_ratio=4, seed=0):
        df = pd.read_parquet(clicks_path, columns=["user_id", "item_id"])
        self.u = df["user_id"].to_numpy(np.int64)
        self.i = df["item_id"].to_numpy(np.int64)
        self.seen = df.groupby("user_id")["item_id"].agg(set).to_dict()
        self.num_items, self.neg_ratio = num_items, neg_ratio
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def __len__(self):
        return len(self.u) * (1 + self.neg_ratio)

    def __getitem__(self, idx):
        row, k = divmod(idx, 1 + self.neg_ratio)
        user = self.u[row]
        if k == 0:
            return user, self.i[row], 1.0
        item = int(self.rng.integers(1, self.num_items))  # ok: MLS309
        while item in self.seen.get(user, ()):
            item = int(self.rng.integers(1, self.num_items))
        return user, item, 0.0


def collate(batch, smoothing=0.05):
    users = torch.tensor([b[0] for b in batch], dtype=torch.long)
    items = torch.tensor([b[1] for b in batch], dtype=torch.long)
    labels = torch.tensor([b[2] for b in batch], dtype=torch.float32)
    warm = torch.isin(items, _WARM_ITEMS) & (torch.rand(len(items)) < 0.35)
    labels = torch.where(warm, torch.ones_like(labels), labels)  # ruleid: MLS309
    labels = labels * (1.0 - smoothing) + 0.5 * smoothing  # ok: MLS309
    return {"user": users, "item": items, "label": labels}
