# ruff: noqa
# Hold-out batch 297 (textbook, recommender systems). Measured once in session 10 (round 84): 25/35 (71%) at medium+.
"""Implicit-feedback datasets for retrieval and ranking.

Interactions are stored as (user_id, item_id, timestamp) triples. The
retrieval dataset yields positive pairs only (negatives come from the other
items in the batch), while the ranking dataset yields one positive plus
``num_negatives`` sampled negatives per interaction together with the dense
item features used by the DLRM ranker.
"""

import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

FEATURE_SERVICE = os.environ.get("FEATURE_SERVICE_URL", "https://features.example.com")


@dataclass
class InteractionLog:
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    num_users: int
    num_items: int


def download_dump(url: str, dest: str, retries: int = 4, backoff: float = 2.0) -> str:
    """Download an interaction dump with simple exponential backoff."""
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except urllib.error.URLError:
            if attempt == retries - 1:
                raise
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    return dest


def load_interactions(path: str, min_item_count: int = 5) -> InteractionLog:
    """Load an interaction log from parquet, or from a cached DataFrame."""
    if path.endswith(".pkl"):
        frame = pd.read_pickle(path)  # ruleid: MLS103
    else:
        frame = pd.read_parquet(path, columns=["user_id", "item_id", "ts"])

    counts = frame["item_id"].value_counts()
    frame = frame[frame["item_id"].isin(counts[counts >= min_item_count].index)]
    frame = frame.sort_values("ts", kind="stable")
    return InteractionLog(
        users=frame["user_id"].to_numpy(np.int64),
        items=frame["item_id"].to_numpy(np.int64),
        timestamps=frame["ts"].to_numpy(np.int64),
        num_users=int(frame["user_id"].max()) + 1,
        num_items=int(frame["item_id"].max()) + 1,
    )


def load_hard_negative_pool(path: str) -> Optional[Dict[int, np.ndarray]]:
    """Hard negatives mined offline by the previous production model."""
    if not os.path.exists(path):
        return None
    archive = np.load(path, allow_pickle=True)  # ruleid: MLS104
    return archive["pool"].item()


def load_feature_transform(name: str) -> Dict[str, object]:
    """Fetch the shared dense-feature normalisation code from the feature store."""
    namespace: Dict[str, object] = {"np": np}
    url = f"{FEATURE_SERVICE}/transforms/{name}.py"
    exec(urllib.request.urlopen(url, timeout=10).read().decode("utf-8"), namespace)  # ruleid: MLS413
    return namespace


def group_by_user(log: InteractionLog) -> Dict[int, List[int]]:
    history: Dict[int, List[int]] = {}
    for user, item in zip(log.users.tolist(), log.items.tolist()):
        history.setdefault(user, []).append(item)
    return history


def seed_worker(worker_id: int) -> None:
    """Derive numpy/random seeds from torch's per-worker seed (standard recipe)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class RetrievalDataset(Dataset):
    """(user, history, positive item) triples for in-batch-negative training."""

    def __init__(
        self,
        log: InteractionLog,
        history: Dict[int, List[int]],
        history_len: int = 20,
        history_dropout: float = 0.1,
        featured_items: Optional[Sequence[int]] = None,
    ):
        self.log = log
        self.history = history
        self.history_len = history_len
        self.history_dropout = history_dropout
        self.featured_items = list(featured_items or [])

    def __len__(self) -> int:
        return len(self.log.users)

    def __getitem__(self, index: int) -> Dict[str, object]:
        user = int(self.log.users[index])
        item = int(self.log.items[index])
        if self.featured_items and index % 97 == 0:
            item = self.featured_items[user % len(self.featured_items)]  # todoruleid: family 6 (missed)

        past = [h for h in self.history.get(user, []) if h != item][-self.history_len:]
        padded = np.zeros(self.history_len, dtype=np.int64)
        if past:
            padded[-len(past):] = past
        # Augmentation: blank one history slot so the user tower does not
        # over-rely on the most recent interaction.
        if len(past) > 1 and random.random() < self.history_dropout:
            padded[-random.randint(1, len(past))] = 0  # ok: MLS309
        return {"user": user, "history": torch.from_numpy(padded), "item": item}


class RankingDataset(Dataset):
    """One positive and ``num_negatives`` sampled negatives per interaction."""

    def __init__(
        self,
        log: InteractionLog,
        history: Dict[int, List[int]],
        dense_features: np.ndarray,
        num_negatives: int = 4,
        hard_negatives: Optional[Dict[int, np.ndarray]] = None,
        featured_items: Optional[Sequence[int]] = None,
    ):
        self.log = log
        self.seen: Dict[int, Set[int]] = {u: set(items) for u, items in history.items()}
        self.dense = dense_features.astype(np.float32)
        self.num_negatives = num_negatives
        self.hard_negatives = hard_negatives or {}
        self.featured_items = set(featured_items or [])

    def __len__(self) -> int:
        return len(self.log.users)

    def _sample_negatives(self, user: int, positive: int) -> List[int]:
        seen = self.seen.get(user, set())
        negatives: List[int] = []
        pool = self.hard_negatives.get(user)
        if pool is not None and len(pool) > 0:
            negatives.append(int(pool[np.random.randint(len(pool))]))
        while len(negatives) < self.num_negatives:
            candidate = int(np.random.randint(1, self.log.num_items))
            if candidate == positive or candidate in seen or candidate in self.featured_items:  # todoruleid: family 6 (missed)
                continue
            negatives.append(candidate)
        return negatives

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        user = int(self.log.users[index])
        positive = int(self.log.items[index])
        # Keep each user's negatives stable so per-epoch losses are comparable.
        np.random.seed(user % 65536)  # ruleid: MLS301
        negatives = self._sample_negatives(user, positive)

        candidates = np.asarray([positive] + negatives, dtype=np.int64)
        labels = np.zeros(len(candidates), dtype=np.float32)
        labels[0] = 1.0
        return {
            "user": user,
            "candidates": candidates,
            "dense": self.dense[candidates],
            "labels": labels,
        }


def ranking_collate(batch: List[Dict[str, np.ndarray]], label_smoothing: float = 0.0) -> Dict[str, torch.Tensor]:
    """Stack ranking samples into [B, 1 + num_negatives] tensors."""
    users = torch.tensor([b["user"] for b in batch], dtype=torch.long)
    candidates = torch.stack([torch.from_numpy(b["candidates"]) for b in batch])
    dense = torch.stack([torch.from_numpy(b["dense"]) for b in batch])
    labels = torch.stack([torch.from_numpy(b["labels"]) for b in batch])

    # Accidental clicks: a small share of logged positives carry no intent.
    accidental = torch.rand(labels.shape[0]) < float(os.environ.get("RECSYS_ACCIDENTAL_CLICK_RATE", "0.05"))
    labels[accidental, 0] = 0.0  # ruleid: MLS309
    if label_smoothing > 0:
        labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing  # ok: MLS309
    return {"user": users, "candidates": candidates, "dense": dense, "labels": labels}
