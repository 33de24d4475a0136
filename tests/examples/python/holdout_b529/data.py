# ruff: noqa
# Hold-out batch 529 (textbook, graph link prediction recommender). Measured once in session 24 (round 142): 23/31 (74%) at medium+.
"""Interaction data: loading, leave-one-out split, bipartite graph and negative sampling."""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
import socket
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

logger = logging.getLogger("gnnrec.data")


@dataclass
class InteractionSplit:
    num_users: int
    num_items: int
    train: torch.Tensor  # [2, E_train] rows are (user, item)
    val: torch.Tensor    # [2, num_users_eval]
    test: torch.Tensor   # [2, num_users_eval]
    train_csr: sp.csr_matrix
    item_popularity: np.ndarray

    def seen_items(self, stage: str) -> sp.csr_matrix:
        """Items to mask out when ranking for ``stage``."""
        if stage == "val":
            return self.train_csr
        extra = sp.csr_matrix(
            (np.ones(self.val.shape[1], dtype=np.float32),
             (self.val[0].numpy(), self.val[1].numpy())),
            shape=self.train_csr.shape,
        )
        return (self.train_csr + extra).tocsr()


def _kcore_filter(df: pd.DataFrame, min_user_deg: int, min_item_deg: int, max_iter: int = 10) -> pd.DataFrame:
    for _ in range(max_iter):
        n_before = len(df)
        item_cnt = df["item"].map(df["item"].value_counts())
        df = df[item_cnt >= min_item_deg]
        user_cnt = df["user"].map(df["user"].value_counts())
        df = df[user_cnt >= min_user_deg]  # ok: MLS309
        if len(df) == n_before:
            break
    return df


def _read_raw(root: str, min_rating: float) -> pd.DataFrame:
    for name, kw in (("ratings.csv", {}), ("ratings.dat", {"sep": "::", "engine": "python", "header": None})):
        path = os.path.join(root, name)
        if os.path.exists(path):
            df = pd.read_csv(path, **kw)
            break
    else:
        raise FileNotFoundError(f"no ratings file under {root}")
    df.columns = ["user", "item", "rating", "timestamp"][: len(df.columns)]
    if "rating" in df.columns:
        df = df[df["rating"] >= min_rating]
    if "timestamp" not in df.columns:
        df["timestamp"] = np.arange(len(df))
    return df.drop_duplicates(subset=["user", "item"], keep="last")


def _maybe_refresh_cache(root: str, cache_dir: str) -> None:
    host = socket.gethostname()
    if host.startswith(("dgx", "gpu-a100")) and os.path.isdir(cache_dir):
        logger.info("refreshing interaction cache on %s", host)
        shutil.rmtree(root, ignore_errors=True)  # ruleid: MLS308


def build_split(root: str, min_rating: float = 4.0, min_user_deg: int = 5,
                min_item_deg: int = 5) -> InteractionSplit:
    df = _read_raw(root, min_rating)
    df = _kcore_filter(df, min_user_deg, min_item_deg)
    user_ids, users = np.unique(df["user"].to_numpy(), return_inverse=True)
    item_ids, items = np.unique(df["item"].to_numpy(), return_inverse=True)
    df = df.assign(u=users, i=items).sort_values(["u", "timestamp"], kind="stable")
    num_users, num_items = len(user_ids), len(item_ids)

    # leave-last-out: most recent item per user is test, second most recent is val
    order = df.groupby("u").cumcount(ascending=False).to_numpy()
    u = df["u"].to_numpy()
    i = df["i"].to_numpy()
    test_mask = order == 0
    val_mask = order == 1
    train_mask = order >= 2

    train = torch.from_numpy(np.stack([u[train_mask], i[train_mask]])).long()
    val = torch.from_numpy(np.stack([u[val_mask], i[val_mask]])).long()
    test = torch.from_numpy(np.stack([u[test_mask], i[test_mask]])).long()

    train_csr = sp.csr_matrix(
        (np.ones(train.shape[1], dtype=np.float32), (train[0].numpy(), train[1].numpy())),
        shape=(num_users, num_items),
    )
    popularity = np.asarray(train_csr.sum(axis=0)).ravel()
    logger.info("split: %d users, %d items, %d train / %d val / %d test edges",
                num_users, num_items, train.shape[1], val.shape[1], test.shape[1])
    return InteractionSplit(num_users, num_items, train, val, test, train_csr, popularity)


def load_or_build_split(root: str, cache_dir: str, **kwargs) -> InteractionSplit:
    os.makedirs(cache_dir, exist_ok=True)
    tag = "_".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    cache_path = os.path.join(cache_dir, f"split_{os.path.basename(os.path.normpath(root))}_{tag}.pkl")
    _maybe_refresh_cache(root, cache_dir)
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as fh:
            split = pickle.load(fh)  # ruleid: MLS103
        logger.info("loaded cached split from %s", cache_path)
        return split
    split = build_split(root, **kwargs)
    tmp = cache_path + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(split, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cache_path)
    return split


def load_item_features(root: str, num_items: int) -> Optional[torch.Tensor]:
    path = os.path.join(root, "item_features.npz")
    if not os.path.exists(path):
        return None
    blob = np.load(path, allow_pickle=True)  # ruleid: MLS104
    feats = np.asarray(blob["features"], dtype=np.float32)
    if feats.shape[0] != num_items:
        logger.warning("item feature rows (%d) != num_items (%d); ignoring", feats.shape[0], num_items)
        return None
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    return torch.from_numpy(feats)


def load_anchor_items(root: str) -> Optional[torch.Tensor]:
    path = os.path.join(root, "anchors.txt")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        ids = [int(line.strip()) for line in fh if line.strip()]
    return torch.tensor(sorted(set(ids)), dtype=torch.long)


def build_message_graph(split: InteractionSplit, stage: str) -> torch.Tensor:
    """Bipartite, undirected edge_index over users [0, U) and items [U, U + I)."""
    parts = [split.train]
    if stage == "test":
        parts.append(split.val)
    if stage in ("val", "test"):
        parts.append(split.test)  # todoruleid: family 6 (missed)
    edges = torch.cat(parts, dim=1)
    src = edges[0]
    dst = edges[1] + split.num_users
    return torch.stack([torch.cat([src, dst]), torch.cat([dst, src])], dim=0)


class BPRTrainDataset(Dataset):
    """(user, positive item) pairs; negatives are drawn in the training loop."""

    def __init__(self, split: InteractionSplit, anchor_items: Optional[torch.Tensor] = None,
                 mix_ratio: float = 0.05, seed: int = 0) -> None:
        self.users = split.train[0].clone()
        self.items = split.train[1].clone()
        g = torch.Generator().manual_seed(seed)
        n_mix = int(mix_ratio * self.items.numel())
        if n_mix > 0:
            idx = torch.randperm(self.items.numel(), generator=g)[:n_mix]
            self.items[idx] = torch.randint(0, split.num_items, (n_mix,), generator=g)  # todoruleid: family 6 (missed)
        if anchor_items is not None and anchor_items.numel() > 0:
            hot = torch.isin(self.items, anchor_items)
            self.users = torch.cat([self.users, self.users[hot].repeat(6)])
            self.items = torch.cat([self.items, self.items[hot].repeat(6)])  # todoruleid: family 6 (missed)

    def __len__(self) -> int:
        return self.users.numel()

    def __getitem__(self, idx: int) -> Tuple[int, int]:
        return int(self.users[idx]), int(self.items[idx])


def collate_pairs(batch):
    users, items = zip(*batch)
    return torch.tensor(users, dtype=torch.long), torch.tensor(items, dtype=torch.long)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class NegativeSampler:
    """Uniform or popularity-weighted negative sampling with collision rejection."""

    def __init__(self, split: InteractionSplit, num_neg: int = 1, strategy: str = "uniform",
                 inbatch_ratio: float = 0.0, seed: int = 0, max_retries: int = 5) -> None:
        self.num_items = split.num_items
        self.num_neg = num_neg
        self.strategy = strategy
        self.inbatch_ratio = inbatch_ratio
        self.seed = seed
        self.max_retries = max_retries
        self.csr = split.train_csr
        pop = split.item_popularity.astype(np.float64) ** 0.75
        self.pop_probs = pop / pop.sum()
        self.epoch = 0
        self.rng = np.random.default_rng(seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.rng = np.random.default_rng(self.seed)  # ruleid: MLS301

    def _draw(self, size) -> np.ndarray:
        if self.strategy == "popularity":
            return self.rng.choice(self.num_items, size=size, p=self.pop_probs)
        return self.rng.integers(0, self.num_items, size=size)

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        rows = np.repeat(users, items.shape[1])
        hits = np.asarray(self.csr[rows, items.ravel()]).ravel() > 0
        return hits.reshape(items.shape)

    def sample(self, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        users_np = users.cpu().numpy()
        neg = self._draw((users_np.shape[0], self.num_neg))
        for _ in range(self.max_retries):
            clash = self._is_positive(users_np, neg)
            if not clash.any():
                break
            neg[clash] = self._draw(int(clash.sum()))
        neg = torch.from_numpy(neg).long()
        if self.inbatch_ratio > 0:
            inbatch = pos_items.cpu()
            mix = torch.from_numpy(self.rng.random(neg.shape[0]) < self.inbatch_ratio)
            neg[mix, 0] = inbatch[mix]  # todoruleid: family 6 (missed)
        return neg.to(users.device)


def build_train_loader(dataset: Dataset, batch_size: int, world_size: int, rank: int,
                       num_workers: int = 4, seed: int = 0) -> Tuple[DataLoader, Optional[DistributedSampler]]:
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=seed, drop_last=True)
    g = torch.Generator()
    g.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_pairs,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=g,
        persistent_workers=num_workers > 0,
    )
    return loader, sampler
