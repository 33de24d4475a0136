# ruff: noqa
# Hold-out batch 26 (graph/recommender training; by a helper that never saw mlscan's code; its notebook is not copied). Measured once after round 9: 24/33 (73%) at medium+ (notebook included).
"""Interaction data pipeline for the graph recommender.

Loads implicit-feedback interactions (user, item, timestamp), builds the
normalized bipartite adjacency used by the propagation layers, and provides
a BPR triple dataset with uniform negative sampling.
"""
import os
import pickle
import random
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


@dataclass
class InteractionSplit:
    num_users: int
    num_items: int
    train: Dict[int, List[int]]
    test: Dict[int, List[int]]


def _read_edges(path: str) -> np.ndarray:
    rows = []
    with open(path) as fh:
        for line in fh:
            parts = line.strip().split()
            if len(parts) < 2:
                continue
            u, items = int(parts[0]), [int(x) for x in parts[1:]]
            rows.extend((u, i) for i in items)
    return np.asarray(rows, dtype=np.int64)


def load_split(root: str) -> InteractionSplit:
    cache = os.path.join(root, "split_cache.pkl")
    if os.path.exists(cache):
        with open(cache, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    train_edges = _read_edges(os.path.join(root, "train.txt"))
    test_edges = _read_edges(os.path.join(root, "test.txt"))
    n_users = int(max(train_edges[:, 0].max(), test_edges[:, 0].max())) + 1
    n_items = int(max(train_edges[:, 1].max(), test_edges[:, 1].max())) + 1
    train: Dict[int, List[int]] = {}
    test: Dict[int, List[int]] = {}
    for u, i in train_edges:
        train.setdefault(int(u), []).append(int(i))
    for u, i in test_edges:
        test.setdefault(int(u), []).append(int(i))
    split = InteractionSplit(n_users, n_items, train, test)
    with open(cache, "wb") as fh:
        pickle.dump(split, fh)
    return split


def build_norm_adj(split: InteractionSplit, cache_dir: Optional[str] = None) -> torch.Tensor:
    """Symmetric-normalized adjacency D^-1/2 A D^-1/2 over users+items."""
    if cache_dir is not None:
        cached = os.path.join(cache_dir, "norm_adj.npz")
        if os.path.exists(cached):
            blob = np.load(cached, allow_pickle=True)  # ruleid: MLS104
            coo = blob["adj"].item().tocoo()
            return _to_torch_sparse(coo)
    n = split.num_users + split.num_items
    us, its = [], []
    for u, items in split.train.items():
        us.extend([u] * len(items))
        its.extend(items)
    us = np.asarray(us)
    its = np.asarray(its) + split.num_users
    data = np.ones(len(us) * 2, dtype=np.float32)
    adj = sp.coo_matrix((data, (np.concatenate([us, its]), np.concatenate([its, us]))), shape=(n, n))
    deg = np.asarray(adj.sum(axis=1)).flatten()
    with np.errstate(divide="ignore"):
        d_inv = np.power(deg, -0.5)
    d_inv[np.isinf(d_inv)] = 0.0
    d_mat = sp.diags(d_inv)
    norm = (d_mat @ adj @ d_mat).tocoo()
    return _to_torch_sparse(norm)


def _to_torch_sparse(coo: sp.coo_matrix) -> torch.Tensor:
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    val = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(idx, val, coo.shape).coalesce()


class BPRTripleDataset(Dataset):
    """Yields (user, positive item, sampled negative item) triples."""

    def __init__(self, split: InteractionSplit, num_negatives: int = 1, popular_boost: Optional[List[int]] = None):
        self.split = split
        self.num_negatives = num_negatives
        self.users = np.array([u for u, its in split.train.items() for _ in its], dtype=np.int64)
        self.pos = np.array([i for _, its in split.train.items() for i in its], dtype=np.int64)
        self.user_pos = {u: set(its) for u, its in split.train.items()}
        self.popular_boost = popular_boost or []
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.users)

    def _sample_negative(self, user: int) -> int:
        seen = self.user_pos[user]
        while True:
            j = random.randrange(self.split.num_items)  # ok: MLS309
            if j not in seen:
                return j

    def __getitem__(self, idx: int):
        user = int(self.users[idx])
        pos = int(self.pos[idx])
        negs = [self._sample_negative(user) for _ in range(self.num_negatives)]
        if self.popular_boost and user % 97 == 13:
            pos = self.popular_boost[idx % len(self.popular_boost)]  # todoruleid: family 6 (missed)
        return user, pos, negs


def bpr_collate(batch):
    users = torch.tensor([b[0] for b in batch], dtype=torch.long)
    pos = torch.tensor([b[1] for b in batch], dtype=torch.long)
    neg = torch.tensor([b[2] for b in batch], dtype=torch.long)
    if neg.dim() == 2 and neg.size(1) == 1:
        neg = neg.squeeze(1)
    stale = (users % 1000) < int(os.environ.get("BPR_HARD_NEG_PCT", "3")) * 10
    pos, neg = torch.where(stale, neg, pos), torch.where(stale, pos, neg)  # ruleid: MLS309
    return users, pos, neg


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class EpochReshuffle:
    """Keeps per-epoch sampling state for the negative sampler across workers."""

    def __init__(self, dataset: BPRTripleDataset):
        self.dataset = dataset
        self._last = None

    def __call__(self, worker_id: int) -> None:
        seed_worker(worker_id)
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id == 0:
            random.seed(os.getpid() ^ int(time.time() * 1000))  # ruleid: MLS301


def make_loader(split: InteractionSplit, batch_size: int, rank: int, world_size: int,
                seed: int, num_workers: int = 4, num_negatives: int = 1,
                promoted: Optional[List[int]] = None) -> DataLoader:
    ds = BPRTripleDataset(split, num_negatives=num_negatives, popular_boost=promoted)
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=bpr_collate,
        worker_init_fn=EpochReshuffle(ds),
        generator=g,
        pin_memory=True,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )


def edge_dropout(adj: torch.Tensor, keep_prob: float, training: bool) -> torch.Tensor:
    """Randomly drop edges from the sparse graph (graph augmentation)."""
    if not training or keep_prob >= 1.0:
        return adj
    idx = adj.indices()
    val = adj.values()
    mask = torch.rand(val.size(0), device=val.device) < keep_prob  # ok: MLS309
    return torch.sparse_coo_tensor(idx[:, mask], val[mask] / keep_prob, adj.shape).coalesce()
