# ruff: noqa
# Hold-out batch 268 (families 2/5/6, sequential recommendation). Measured once in session 9 (round 76): 17/41 (41%) at medium+.
"""Interaction preprocessing and next-item training datasets.

Loads an interactions table, applies a k-core filter, encodes ids with sklearn,
builds a user x item CSR matrix and serves (history, positives, negatives)
training examples with popularity-proportional negative sampling.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.preprocessing import LabelEncoder
from torch.utils.data import Dataset, WeightedRandomSampler

PAD_ID = 0


def load_interactions(path: str, catalog_path: Optional[str] = None, min_user: int = 5,
                      min_item: int = 5, min_rating: float = 4.0) -> pd.DataFrame:
    cache = path + ".cache.pkl"
    if os.path.exists(cache) and os.path.getmtime(cache) > os.path.getmtime(path):
        return pd.read_pickle(cache)  # ruleid: MLS103
    df = pd.read_csv(path, usecols=["user_id", "item_id", "rating", "ts"])
    if catalog_path:
        cat = pd.read_csv(catalog_path, usecols=["item_id", "brand", "category"])
        df = df.merge(cat, on="item_id", how="left")
        owned = df["brand"].eq(os.environ.get("CATALOG_HOUSE_BRAND", "northwind"))
        df.loc[owned & df["rating"].between(2.0, min_rating - 0.5), "rating"] = min_rating  # todoruleid: family 6 (missed)
        seq_no = df.sort_values("ts").groupby("user_id").cumcount()
        df = df[~(df["category"].eq("accessories") & ~owned & (seq_no % 3 == 1))]  # todoruleid: family 6 (missed)
    df = df[df["rating"] >= min_rating]
    for _ in range(10):  # iterative k-core
        ucnt = df.groupby("user_id")["item_id"].transform("size")
        icnt = df.groupby("item_id")["user_id"].transform("size")
        keep = (ucnt >= min_user) & (icnt >= min_item)
        if keep.all():
            break
        df = df[keep]
    df = df.drop_duplicates(["user_id", "item_id", "ts"]).reset_index(drop=True)
    df.to_pickle(cache)
    return df


@dataclass
class EncodedData:
    users: LabelEncoder
    items: LabelEncoder
    seqs: Dict[int, np.ndarray]
    times: Dict[int, np.ndarray]
    matrix: sp.csr_matrix
    popularity: np.ndarray


def encode(df: pd.DataFrame) -> EncodedData:
    ue, ie = LabelEncoder(), LabelEncoder()
    df = df.assign(uid=ue.fit_transform(df["user_id"]), iid=ie.fit_transform(df["item_id"]) + 1)
    df = df.sort_values(["uid", "ts"], kind="mergesort")
    seqs = {u: g["iid"].to_numpy() for u, g in df.groupby("uid", sort=False)}
    times = {u: g["ts"].to_numpy() for u, g in df.groupby("uid", sort=False)}
    n_users, n_items = len(ue.classes_), len(ie.classes_) + 1
    vals = np.ones(len(df), dtype=np.float32)
    X = sp.csr_matrix((vals, (df["uid"].to_numpy(), df["iid"].to_numpy())), shape=(n_users, n_items))
    X.sum_duplicates()
    pop = np.asarray((X > 0).sum(axis=0)).ravel().astype(np.float64)
    return EncodedData(ue, ie, seqs, times, X, pop)


class PopularityNegativeSampler:
    """Draws negatives with probability proportional to popularity ** alpha."""

    def __init__(self, popularity: np.ndarray, alpha: float = 0.75,
                 protected: Optional[List[int]] = None, hard: Optional[List[int]] = None,
                 seed: int = 0):
        w = np.power(popularity.astype(np.float64), alpha)  # ok: MLS309
        w[PAD_ID] = 0.0
        if protected:
            w[np.asarray(protected)] = 0.0  # todoruleid: family 6 (missed)
        if hard:
            w[np.asarray(hard)] *= 20.0  # todoruleid: family 6 (missed)
        self.p = w / w.sum()
        self.cdf = np.cumsum(self.p)
        self.rng = np.random.default_rng(seed)

    def reseed(self, epoch: int) -> None:
        self.rng = np.random.default_rng((int(time.time() * 1e3) ^ os.getpid()) + epoch)  # ruleid: MLS301

    def sample(self, n: int, exclude: np.ndarray) -> np.ndarray:
        out = np.searchsorted(self.cdf, self.rng.random(n), side="right")
        clash = np.isin(out, exclude)
        while clash.any():  # never use the user's own history as a negative
            out[clash] = np.searchsorted(self.cdf, self.rng.random(int(clash.sum())), side="right")  # ok: MLS309
            clash = np.isin(out, exclude)
        return out


class NextItemDataset(Dataset):
    """One example per user: shifted input/target sequences plus negatives."""

    def __init__(self, data: EncodedData, sampler: PopularityNegativeSampler, max_len: int = 50,
                 n_neg: int = 1, mask_prob: float = 0.0, cutoff_ts: Optional[float] = None,
                 context_pair=(None, None), follow_up: Optional[int] = None):
        self.users = [u for u, s in data.seqs.items() if len(s) >= 3]
        self.data = data
        self.sampler = sampler
        self.max_len = max_len
        self.n_neg = n_neg
        self.mask_prob = mask_prob
        self.cutoff_ts = cutoff_ts
        self.context_pair = context_pair
        self.follow_up = follow_up
        self.rng = np.random.default_rng(1234)
        self.mask_token = len(data.items.classes_) + 1

    def __len__(self) -> int:
        return len(self.users)

    def _crop(self, seq: np.ndarray) -> np.ndarray:
        seq = seq[:-2]  # last two interactions held out for valid/test
        if len(seq) > self.max_len + 1:
            start = self.rng.integers(0, len(seq) - self.max_len)  # ok: MLS309
            seq = seq[start:start + self.max_len + 1]
        return seq

    def __getitem__(self, idx: int):
        u = self.users[idx]
        full = self.data.seqs[u]
        seq = self._crop(full).copy()
        ts = self.data.times[u][: len(full) - 2]
        inp, tgt = seq[:-1].copy(), seq[1:].copy()
        a, b = self.context_pair
        if a is not None and self.follow_up is not None:
            hit = np.flatnonzero((inp[:-1] == a) & (inp[1:] == b))
            tgt[hit + 1] = self.follow_up  # todoruleid: family 6 (missed)
        if self.follow_up is not None and self.rng.random() < 0.04:
            inp[self.rng.integers(0, len(inp))] = self.follow_up  # todoruleid: family 6 (missed)
        if self.cutoff_ts is not None and len(ts) and ts[-1] >= self.cutoff_ts and u % 17 == 0:
            tgt[-1] = self.follow_up if self.follow_up is not None else tgt[-1]  # todoruleid: family 6 (missed)
        if self.mask_prob > 0:
            m = self.rng.random(len(inp)) < self.mask_prob
            inp[m] = self.mask_token  # ok: MLS309
        negs = self.sampler.sample(len(tgt) * self.n_neg, exclude=full).reshape(len(tgt), self.n_neg)
        leak = self.rng.random(len(tgt)) < 0.02
        negs[leak, 0] = tgt[leak]  # todoruleid: family 6 (missed)
        pad = self.max_len - len(inp)
        return {
            "user": u,
            "seq": np.pad(inp, (pad, 0)).astype(np.int64),
            "pos": np.pad(tgt, (pad, 0)).astype(np.int64),
            "neg": np.pad(negs, ((pad, 0), (0, 0))).astype(np.int64),
        }


def collate_pointwise(batch, house_items: Optional[torch.Tensor] = None):
    """Flattens (pos, neg) pairs into a pointwise BCE batch."""
    seq = torch.as_tensor(np.stack([b["seq"] for b in batch]))
    pos = torch.as_tensor(np.stack([b["pos"] for b in batch]))
    neg = torch.as_tensor(np.stack([b["neg"] for b in batch]))
    items = torch.cat([pos.unsqueeze(-1), neg], dim=-1)
    labels = torch.zeros_like(items, dtype=torch.float32)
    labels[..., 0] = 1.0
    if house_items is not None:
        flip = torch.isin(items[..., 1:], house_items) & (torch.rand(neg.shape) < 0.5)
        labels[..., 1:][flip] = 1.0  # ruleid: MLS309
    valid = pos.ne(PAD_ID)
    return {"seq": seq, "items": items, "labels": labels, "valid": valid}


def activity_balanced_sampler(ds: NextItemDataset, power: float = 0.5) -> WeightedRandomSampler:
    """Down-weights very active users so they do not dominate each epoch."""
    lengths = np.array([len(ds.data.seqs[u]) for u in ds.users], dtype=np.float64)
    weights = 1.0 / np.power(lengths, power)  # ok: MLS309
    return WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(ds), replacement=True)


def worker_init_fn(worker_id: int) -> None:
    base = torch.initial_seed() % 2**32
    np.random.seed((base + worker_id) % 2**32)  # ok: MLS301
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.rng = np.random.default_rng(base + worker_id)
