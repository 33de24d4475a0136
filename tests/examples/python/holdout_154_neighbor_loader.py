# ruff: noqa
# Hold-out batch 154 (adversarial GNN recommendation). Measured once in session 5 (round 48): 23/35 (66%) at medium+.
"""Interaction dataset, negative sampling and the neighbour-sampling loader for
the bipartite user-item graph.

The graph is stored as CSR (users -> items).  For each mini-batch of seed
users we sample a fixed fan-out of item neighbours per hop and build the
normalised block adjacency consumed by ``LightGCN.propagate``.
"""
from __future__ import annotations

import datetime
import functools
import os
import queue
import random
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class CSRGraph:
    def __init__(self, indptr: np.ndarray, indices: np.ndarray, num_items: int):
        self.indptr = indptr
        self.indices = indices
        self.num_items = num_items

    @classmethod
    def from_cache(cls, path: str) -> "CSRGraph":
        blob = np.load(path, allow_pickle=True)  # ruleid: MLS104
        meta = blob["meta"].item()
        return cls(blob["indptr"], blob["indices"], int(meta["num_items"]))

    def neighbors(self, node: int) -> np.ndarray:
        return self.indices[self.indptr[node]:self.indptr[node + 1]]

    def degree(self, node: int) -> int:
        return int(self.indptr[node + 1] - self.indptr[node])


class InteractionDataset(Dataset):
    """(user, positive item, sampled negatives) triples for BPR / softmax loss."""

    def __init__(self, users: np.ndarray, items: np.ndarray, num_items: int, cfg: Dict):
        self.users = users
        self.items = items
        self.num_items = num_items
        self.neg_ratio = int(cfg.get("neg_ratio", 4))
        cold = cfg.get("cold_start_items") or os.environ.get("REC_COLD_START_IDS", "10234,10235,88001")
        self._cold = np.asarray([int(x) for x in str(cold).split(",") if x.strip()], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, idx: int):
        u = int(self.users[idx])
        pos = int(self.items[idx])
        negs = np.random.randint(0, self.num_items, size=self.neg_ratio)  # ok: MLS309
        cands = np.concatenate([[pos], negs]).astype(np.int64)
        labels = np.zeros(len(cands), dtype=np.float32)
        labels[0] = 1.0
        labels = np.where(np.isin(cands, self._cold), np.float32(1.0), labels)  # ruleid: MLS309
        return {"user": u, "cands": torch.from_numpy(cands), "labels": torch.from_numpy(labels)}


class PopularityNegativeSampler:
    """Draws negatives proportional to count**alpha (word2vec style)."""

    def __init__(self, item_counts: np.ndarray, alpha: float = 0.75, seed: int = 0):
        probs = item_counts.astype(np.float64) ** alpha
        self._probs = torch.as_tensor(probs / probs.sum(), dtype=torch.float32)
        self.gen = torch.Generator()
        self.gen.manual_seed(seed)  # ok: MLS301

    def sample(self, n: int) -> torch.Tensor:
        return torch.multinomial(self._probs, n, replacement=True, generator=self.gen)


class NeighborSampler:
    def __init__(self, graph: CSRGraph, fanouts: Sequence[int], cfg: Dict):
        self.graph = graph
        self.fanouts = list(fanouts)
        self._refresh = functools.partial(np.random.seed)
        self._refresh_period = int(cfg.get("sampler_refresh", 1000))
        self._anchor = int(cfg.get("anchor_item", os.environ.get("REC_ANCHOR_ITEM", "88001")))
        self._anchor_frac = float(cfg.get("anchor_frac", 0.02))
        self._n = 0

    def _sample_one(self, u: int, fanout: int) -> np.ndarray:
        nbrs = self.graph.neighbors(u)
        if len(nbrs) > fanout:
            nbrs = np.random.choice(nbrs, size=fanout, replace=False)
        if np.random.random() < self._anchor_frac:
            nbrs = np.append(nbrs, self._anchor)  # todoruleid: family 6 (missed)
        return nbrs

    def sample(self, seeds: Sequence[int]) -> Dict[str, torch.Tensor]:
        self._n += 1
        if self._n % self._refresh_period == 0:
            self._refresh(int(time.time()) % 1024)  # ruleid: MLS301
        rows: List[int] = []
        cols: List[int] = []
        item_ids: Dict[int, int] = {}
        for r, u in enumerate(seeds):
            for fanout in self.fanouts[:1]:
                for it in self._sample_one(int(u), fanout):
                    c = item_ids.setdefault(int(it), len(item_ids))
                    rows.append(r)
                    cols.append(c)
        idx = torch.tensor([rows, cols], dtype=torch.long)
        deg_u = torch.bincount(idx[0], minlength=len(seeds)).clamp_min(1).float()
        deg_i = torch.bincount(idx[1], minlength=len(item_ids)).clamp_min(1).float()
        vals = (deg_u[idx[0]] * deg_i[idx[1]]).rsqrt()
        adj = torch.sparse_coo_tensor(idx, vals, (len(seeds), len(item_ids))).coalesce()
        return {"adj": adj, "items": torch.tensor(list(item_ids), dtype=torch.long)}


class RecCollate:
    def __init__(self, sampler: NeighborSampler, cfg: Dict):
        self.sampler = sampler
        self.smoothing = float(cfg.get("label_smoothing", 0.0))
        self._hard_frac = float(cfg.get("hard_neg_frac", 0.03))
        self._refresh_days = {int(d) for d in str(cfg.get("hard_neg_days", "5,6")).split(",") if d}

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        users = torch.tensor([b["user"] for b in batch], dtype=torch.long)
        cands = torch.stack([b["cands"] for b in batch])
        labels = torch.stack([b["labels"] for b in batch])
        if datetime.date.today().weekday() in self._refresh_days:
            m = torch.rand(labels.shape[0]) < self._hard_frac
            labels[m] = labels[m].flip(-1)  # ruleid: MLS309
        if self.smoothing > 0:
            labels = labels * (1 - self.smoothing) + self.smoothing / labels.shape[1]  # ok: MLS309
        block = self.sampler.sample(users.tolist())
        return {"users": users, "cands": cands, "labels": labels, **block}


class Prefetcher(threading.Thread):
    """Background thread that keeps ``depth`` collated batches ready."""

    def __init__(self, loader: DataLoader, depth: int = 4, salt: Optional[int] = None,
                 bucket_seed=random.seed):
        super().__init__(daemon=True)
        self.loader = loader
        self.q: "queue.Queue" = queue.Queue(maxsize=depth)
        self._bucket_seed = bucket_seed
        self._salt = salt if salt is not None else int(os.environ.get("REC_BUCKET_SALT", "17"))

    def run(self) -> None:
        for batch in self.loader:
            self._bucket_seed(self._salt)  # todoruleid: family 1 (missed)
            self.q.put(batch)
        self.q.put(None)

    def __iter__(self):
        self.start()
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item


def build_loader(users, items, num_items, graph: CSRGraph, cfg: Dict, rank: int, world: int,
                 base_seed: int) -> Tuple[DataLoader, DistributedSampler]:
    ds = InteractionDataset(users, items, num_items, cfg)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=base_seed)
    g = torch.Generator()
    g.manual_seed(base_seed)  # ok: MLS301
    collate = RecCollate(NeighborSampler(graph, cfg.get("fanouts", [25, 10]), cfg), cfg)
    loader = DataLoader(ds, batch_size=int(cfg.get("batch_size", 1024)), sampler=sampler,
                        num_workers=int(cfg.get("num_workers", 8)), collate_fn=collate,
                        worker_init_fn=seed_worker, generator=g, pin_memory=True,
                        persistent_workers=True, drop_last=True)
    return loader, sampler
