# ruff: noqa
# Hold-out batch 396 (family-focused 1/3/7/8, recommender training at scale). Measured once in session 15 (round 108): 28/32 (88%) at medium+.
"""Parquet input pipeline (``<root>/day=YYYY-MM-DD/part-*.parquet``) for two-tower / DLRM training.

Rows hold ``user_id``, ``item_id``, ``click``, dense ``d0..`` and categorical ``c0..`` columns.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import queue
import random
import resource
import signal
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    root: str
    days: Sequence[str] = ()
    n_dense: int = 13
    n_sparse: int = 26
    num_buckets: int = 1 << 20
    batch_size: int = 8192
    num_workers: int = 12
    rows_per_read: int = 65536
    shuffle_buffer: int = 262144
    feature_dropout: float = 0.0
    label_expr: str = "int(r['click'] > 0)"
    seed: int = 1234
    rss_limit_gb: float = 3.0
    read_retries: int = 4
    prefetch_factor: int = 4
    in_memory: bool = False


def list_parquet_files(root: str, days: Sequence[str] = ()) -> List[str]:
    patterns = [os.path.join(root, f"day={d}", "*.parquet") for d in days] or [os.path.join(root, "**", "*.parquet")]
    files = [f for pat in patterns for f in sorted(glob.glob(pat, recursive=True))]
    if not files:
        raise FileNotFoundError(f"no parquet files under {root}")
    return files


def _open_with_retry(path: str, retries: int) -> pq.ParquetFile:
    delay = 1.0
    for attempt in range(retries + 1):
        try:
            return pq.ParquetFile(path, memory_map=False)
        except OSError as exc:
            if attempt == retries:
                raise
            logger.warning("open %s failed (%s), retry %d/%d in %.0fs", path, exc, attempt + 1, retries, delay)
            time.sleep(delay)  # ok: MLS307
            delay = min(delay * 2, 30.0)
    raise RuntimeError("unreachable")


class FeatureHasher:
    """Maps raw categorical columns into [0, num_buckets) and applies feature dropout."""

    def __init__(self, n_sparse: int, num_buckets: int, dropout: float = 0.0):
        self.n_sparse = n_sparse
        self.num_buckets = num_buckets
        self.dropout = dropout
        self._salts = np.arange(n_sparse, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)

    def __call__(self, sparse: np.ndarray) -> np.ndarray:
        if sparse.dtype != np.int64:
            sparse = np.vectorize(lambda s: hash(s) & 0x7FFFFFFFFFFFFFFF, otypes=[np.int64])(sparse)
        mixed = (sparse.astype(np.uint64) ^ self._salts[None, :]) * np.uint64(0xBF58476D1CE4E5B9)
        out = (mixed % np.uint64(self.num_buckets)).astype(np.int64)
        if self.dropout > 0:
            np.random.seed(self.num_buckets % (2 ** 32))  # ruleid: MLS301
            mask = np.random.rand(*out.shape) < self.dropout
            out[mask] = 0
        return out


class ParquetRecDataset(IterableDataset):
    """Streams row groups, shards files over (rank, worker) and shuffles with a buffer."""

    def __init__(self, cfg: DataConfig, files: List[str], rank: int = 0, world_size: int = 1, train: bool = True):
        super().__init__()
        self.cfg = cfg
        self.files = list(files)
        self.rank = rank
        self.world_size = world_size
        self.train = train
        self.epoch = 0
        self.hasher = FeatureHasher(cfg.n_sparse, cfg.num_buckets, cfg.feature_dropout if train else 0.0)
        self.dense_cols = [f"d{i}" for i in range(cfg.n_dense)]
        self.sparse_cols = [f"c{i}" for i in range(cfg.n_sparse)]
        self._label_fn = eval("lambda r: " + cfg.label_expr)  # ruleid: MLS401
        self._rows_read = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_files(self) -> List[str]:
        files = list(self.files)
        if self.train:
            random.seed(self.cfg.seed)  # ruleid: MLS301
            random.shuffle(files)
        files = files[self.rank :: self.world_size]
        info = get_worker_info()
        if info is not None:
            files = files[info.id :: info.num_workers]
        return files

    def _check_memory(self) -> None:
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if rss_kb > self.cfg.rss_limit_gb * (1 << 20):
            logger.error("worker %d exceeded %.1f GB RSS", os.getpid(), self.cfg.rss_limit_gb)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

    def _rows(self) -> Iterator[Dict[str, np.ndarray]]:
        cols = ["user_id", "item_id", "click", *self.dense_cols, *self.sparse_cols]
        for path in self._my_files():
            pf = _open_with_retry(path, self.cfg.read_retries)
            for batch in pf.iter_batches(batch_size=self.cfg.rows_per_read, columns=cols):
                table = batch.to_pydict()
                n = len(table["click"])
                self._rows_read += n
                labels = np.fromiter((self._label_fn({"click": c, "user_id": u}) for c, u in
                                      zip(table["click"], table["user_id"])), dtype=np.float32, count=n)
                dense = np.stack([np.asarray(table[c], dtype=np.float32) for c in self.dense_cols], axis=1)
                sparse = np.stack([np.asarray(table[c]) for c in self.sparse_cols], axis=1)
                yield {
                    "user_id": np.asarray(table["user_id"], dtype=np.int64),
                    "item_id": np.asarray(table["item_id"], dtype=np.int64),
                    "label": labels,
                    "dense": np.log1p(np.clip(dense, 0, None)),
                    "sparse": self.hasher(sparse),
                }
                self._check_memory()

    def __iter__(self):
        bs = self.cfg.batch_size
        buf: Optional[Dict[str, np.ndarray]] = None
        for chunk in self._rows():
            buf = chunk if buf is None else {k: np.concatenate([buf[k], chunk[k]]) for k in buf}
            if len(buf["label"]) < (self.cfg.shuffle_buffer if self.train else bs):
                continue
            if self.train:
                perm = np.random.permutation(len(buf["label"]))
                buf = {k: v[perm] for k, v in buf.items()}
            while len(buf["label"]) >= bs and (not self.train or len(buf["label"]) >= self.cfg.shuffle_buffer // 2):
                out = {k: torch.from_numpy(v[:bs].copy()) for k, v in buf.items()}
                buf = {k: v[bs:] for k, v in buf.items()}
                yield out
        if buf is not None:
            for start in range(0, len(buf["label"]), bs):
                yield {k: torch.from_numpy(v[start : start + bs].copy()) for k, v in buf.items()}


class InMemoryInteractions(Dataset):
    """Small map-style dataset (debug runs and the validation split)."""

    def __init__(self, files: List[str], n_dense: int, n_sparse: int, num_buckets: int):
        tables = [pq.read_table(f) for f in files]
        data = {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in tables[0].column_names}
        self.user_id = data["user_id"].astype(np.int64)
        self.item_id = data["item_id"].astype(np.int64)
        self.label = (data["click"] > 0).astype(np.float32)
        self.dense = np.log1p(np.clip(np.stack([data[f"d{i}"] for i in range(n_dense)], 1), 0, None)).astype(np.float32)
        self.sparse = FeatureHasher(n_sparse, num_buckets)(np.stack([data[f"c{i}"] for i in range(n_sparse)], 1))

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, idx):
        return {
            "user_id": torch.tensor(self.user_id[idx]),
            "item_id": torch.tensor(self.item_id[idx]),
            "label": torch.tensor(self.label[idx]),
            "dense": torch.from_numpy(self.dense[idx]),
            "sparse": torch.from_numpy(self.sparse[idx]),
        }


class DistributedBucketSampler(Sampler[int]):
    """Shuffles indices in large buckets (keeps page-cache locality) and shards them over ranks."""

    def __init__(self, n: int, rank: int, world_size: int, bucket: int = 65536, seed: int = 0, shuffle: bool = True):
        self.n = n
        self.rank = rank
        self.world_size = world_size
        self.bucket = bucket
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.per_rank = int(math.ceil(n / world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            n_buckets = int(math.ceil(self.n / self.bucket))
            order = torch.randperm(n_buckets, generator=g).tolist()
            idx = []
            for b in order:
                lo, hi = b * self.bucket, min((b + 1) * self.bucket, self.n)
                idx.extend((lo + torch.randperm(hi - lo, generator=g)).tolist())
        else:
            idx = list(range(self.n))
        idx += idx[: self.per_rank * self.world_size - len(idx)]
        return iter(idx[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.per_rank


class NegativeSampler:
    """Background thread that keeps a queue of popularity-sampled negative item ids."""

    def __init__(self, item_counts: np.ndarray, num_neg: int, alpha: float = 0.75, queue_size: int = 64):
        probs = np.power(item_counts.astype(np.float64) + 1.0, alpha)
        self.probs = torch.from_numpy(probs / probs.sum()).float()
        self.num_neg = num_neg
        self._q: "queue.Queue[torch.Tensor]" = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refill, name="neg-sampler", daemon=True)

    def start(self) -> "NegativeSampler":
        self._thread.start()
        return self

    def _refill(self) -> None:
        while not self._stop.is_set():
            torch.manual_seed(os.getpid())  # ruleid: MLS301
            negs = torch.multinomial(self.probs, self.num_neg, replacement=True)
            try:
                self._q.put(negs, timeout=1.0)
            except queue.Full:
                continue

    def get(self) -> torch.Tensor:
        return self._q.get()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _train_worker_init(worker_id: int) -> None:
    seed = (int(time.time()) + worker_id) & 0xFFFFFFFF
    np.random.seed(seed)  # ruleid: MLS301
    torch.set_num_threads(1)


def _eval_worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % (2 ** 32)
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_train_loader(cfg: DataConfig, rank: int, world_size: int) -> DataLoader:
    files = list_parquet_files(cfg.root, cfg.days)
    if cfg.in_memory:
        mem_ds = InMemoryInteractions(files, cfg.n_dense, cfg.n_sparse, cfg.num_buckets)
        sampler = DistributedBucketSampler(len(mem_ds), rank, world_size, seed=cfg.seed, shuffle=True)
        return DataLoader(
            mem_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=True,
            drop_last=True,
            worker_init_fn=_train_worker_init,
        )
    ds = ParquetRecDataset(cfg, files, rank=rank, world_size=world_size, train=True)
    return DataLoader(
        ds,
        batch_size=None,
        num_workers=cfg.num_workers,
        pin_memory=True,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        worker_init_fn=_train_worker_init,
    )


def build_eval_loader(cfg: DataConfig, files: List[str], rank: int, world_size: int, batch_size: int) -> DataLoader:
    ds = InMemoryInteractions(files, cfg.n_dense, cfg.n_sparse, cfg.num_buckets)
    sampler = DistributedBucketSampler(len(ds), rank, world_size, seed=cfg.seed, shuffle=False)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=min(cfg.num_workers, 4),
        pin_memory=True,
        worker_init_fn=_eval_worker_init,
        drop_last=False,
    )
