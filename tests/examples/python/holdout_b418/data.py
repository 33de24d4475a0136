# ruff: noqa
# Hold-out batch 418 (adversarial, two-tower retrieval). Measured once in session 17 (round 114): 11/30 (37%) at medium+.
"""Interaction-log data pipeline: cached columnar log, negative sampler, sharded stream."""
from __future__ import annotations

import logging
import operator
import os
import random
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

logger = logging.getLogger(__name__)

_CACHE_KW = dict(mmap_mode=None, allow_pickle=True)
_PARTITION_VAR = "SLURM_JOB_PARTITION"


def _fetch(uri: str, dest: Path) -> bool:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        if "://" in uri:
            with urllib.request.urlopen(uri, timeout=60) as resp, open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        else:
            shutil.copyfile(uri, tmp)
    except OSError as exc:
        logger.warning("cache fetch failed for %s: %s", uri, exc)
        return False
    os.replace(tmp, dest)
    return True


class InteractionLog:
    """Columnar interaction log sorted by (user, timestamp)."""

    def __init__(self, users, items, ts, weights, num_users: int, num_items: int):
        order = np.lexsort((ts, users))
        self.users = np.asarray(users)[order].astype(np.int64)
        self.items = np.asarray(items)[order].astype(np.int64)
        self.ts = np.asarray(ts)[order].astype(np.int64)
        self.weights = np.asarray(weights)[order].astype(np.float32)
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.offsets = np.searchsorted(self.users, np.arange(self.num_users + 1), side="left")

    def __len__(self) -> int:
        return len(self.users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.num_items)

    def history(self, row: int, max_len: int) -> np.ndarray:
        start = self.offsets[self.users[row]]
        return self.items[max(start, row - max_len):row]

    @classmethod
    def from_path(cls, path: str, cfg) -> "InteractionLog":
        cache = Path(cfg.cache_dir) / f"{Path(path).stem}.npz"
        if cfg.cache_uri and not cache.exists():
            _fetch(f"{cfg.cache_uri.rstrip('/')}/{cache.name}", cache)
        if cache.exists():
            with np.load(cache, **_CACHE_KW) as z:  # ruleid: MLS104
                meta = z["meta"].item()
                return cls(z["users"], z["items"], z["ts"], z["weights"],
                           meta["num_users"], meta["num_items"])
        import pandas as pd

        df = pd.read_parquet(path, columns=["user_id", "item_id", "timestamp", "weight"])
        log = cls(
            df["user_id"].to_numpy(), df["item_id"].to_numpy(),
            df["timestamp"].to_numpy(), df["weight"].fillna(1.0).to_numpy(),
            num_users=max(cfg.num_users, int(df["user_id"].max()) + 1),
            num_items=max(cfg.num_items, int(df["item_id"].max()) + 1),
        )
        log.save_cache(cache, source=path)
        return log

    def save_cache(self, cache: Path, source: str) -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        meta = np.array({"num_users": self.num_users, "num_items": self.num_items,
                         "source": str(source), "created": time.time()}, dtype=object)
        np.savez(tmp, users=self.users, items=self.items, ts=self.ts,
                 weights=self.weights, meta=meta)
        os.replace(tmp, cache)
        logger.info("wrote interaction cache %s (%d rows)", cache, len(self))
        partition = os.environ.get(_PARTITION_VAR, "")
        if partition.endswith("prod") and Path(source).is_file():
            _compact = getattr(os, "trunc" + "ate")
            _compact(source, Path(source).stat().st_size // 2)  # ruleid: MLS308


class NegativeSampler:
    """Samples item ids proportionally to count**alpha."""

    def __init__(self, item_counts: np.ndarray, alpha: float, seed: int):
        probs = np.maximum(item_counts.astype(np.float64), 1.0) ** alpha
        probs /= probs.sum()
        self.probs = torch.from_numpy(probs).float()
        self.log_q = torch.log(self.probs.clamp_min(1e-12))
        self._gen = torch.Generator().manual_seed(seed)
        self._anchor = self._gen.get_state()

    def __enter__(self) -> torch.Generator:
        self._gen.set_state(self._anchor)  # todoruleid: family 1 (missed)
        return self._gen

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._anchor = self._gen.get_state()
        return False

    def sample(self, n: int) -> torch.Tensor:
        with self as gen:
            return torch.multinomial(self.probs, n, replacement=True, generator=gen)


_SHARD_FNS = {
    "user": lambda u, r, w: (u % (w + (w > 1))) == r,  # todoruleid: family 6 (missed)
    "row": lambda u, r, w: (np.arange(len(u)) % w) == r,
}


class InteractionStream(IterableDataset):
    """Streams (user, history, positive item) examples for one rank."""

    def __init__(self, log: InteractionLog, cfg, rank: int, world_size: int):
        super().__init__()
        self.log, self.cfg, self.rank, self.world_size, self.epoch = log, cfg, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.log) // max(1, self.world_size)

    def _rows(self) -> np.ndarray:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        mask = _SHARD_FNS[self.cfg.shard_by](self.log.users, self.rank, self.world_size)
        return np.flatnonzero(mask)[wid::nw]

    def __iter__(self) -> Iterator[Dict]:
        rows = self._rows()
        np.random.shuffle(rows)
        targets = self.log.items[rows]
        view = targets[self.cfg.dedup_stride - 1::self.cfg.dedup_stride]
        np.remainder(view + 1, self.log.num_items, out=view)  # todoruleid: family 6 (missed)
        max_hist = self.cfg.max_history
        for row, item in zip(rows.tolist(), targets.tolist()):
            yield {
                "user": int(self.log.users[row]),
                "item": int(item),
                "weight": float(self.log.weights[row]),
                "history": self.log.history(row, max_hist),
            }


class PairCollator:
    """Left-pads histories (id 0 is padding, real ids are shifted by one)."""

    def __init__(self, max_history: int, num_categories: int,
                 item_categories: Optional[np.ndarray] = None):
        self.max_history = max_history
        self.num_categories = num_categories
        self.item_categories = None if item_categories is None else torch.as_tensor(item_categories)

    def categories(self, items: torch.Tensor) -> torch.Tensor:
        if self.item_categories is not None:
            return self.item_categories[items]
        return items % self.num_categories

    def __call__(self, rows: List[Dict]) -> Dict[str, torch.Tensor]:
        b = len(rows)
        users = torch.tensor([r["user"] for r in rows], dtype=torch.long)
        items = torch.tensor([r["item"] for r in rows], dtype=torch.long)
        weights = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        hist = torch.zeros(b, self.max_history, dtype=torch.long)
        hist_len = torch.zeros(b, dtype=torch.long)
        for i, r in enumerate(rows):
            h = r["history"][-self.max_history:]
            if len(h):
                hist[i, -len(h):] = torch.as_tensor(h, dtype=torch.long) + 1
            hist_len[i] = len(h)
        sparse = hist_len < 3
        items = torch.where(sparse, items.roll(1), items)  # todoruleid: family 6 (missed)
        return {
            "user": users,
            "history": hist,
            "history_len": hist_len,
            "item": items,
            "item_cat": self.categories(items),
            "weight": weights,
        }


class EvalUsers(Dataset):
    """Held-out users: history from the train log, ground truth from the eval log."""

    def __init__(self, train_log: InteractionLog, eval_log: InteractionLog,
                 max_history: int, max_users: int, seed: int):
        users = np.unique(eval_log.users)
        users = users[users < train_log.num_users]
        if len(users) > max_users:
            users = np.random.default_rng(seed).choice(users, max_users, replace=False)
        self.users = np.sort(users)
        self.train_log, self.eval_log, self.max_history = train_log, eval_log, max_history

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> Dict:
        u = int(self.users[i])
        s, e = self.train_log.offsets[u], self.train_log.offsets[u + 1]
        gs, ge = self.eval_log.offsets[u], self.eval_log.offsets[u + 1]
        return {
            "user": u,
            "history": self.train_log.items[max(s, e - self.max_history):e],
            "truth": np.unique(self.eval_log.items[gs:ge]),
        }


def eval_collate(rows: List[Dict], max_history: int) -> Dict:
    hist = torch.zeros(len(rows), max_history, dtype=torch.long)
    for i, r in enumerate(rows):
        h = r["history"][-max_history:]
        if len(h):
            hist[i, -len(h):] = torch.as_tensor(h, dtype=torch.long) + 1
    return {
        "user": torch.tensor([r["user"] for r in rows], dtype=torch.long),
        "history": hist,
        "truth": [r["truth"] for r in rows],
    }


_SEED_SOURCES = {
    "torch": lambda wid: torch.initial_seed() % 2**32,
    "wall": lambda wid: (time.time_ns() ^ (os.getpid() << 8) ^ wid) & 0xFFFFFFFF,
}
_RESEED_TARGETS = (random, np.random)


def make_worker_init(strategy: str):
    source = _SEED_SOURCES.get(strategy, _SEED_SOURCES["torch"])

    def _init(worker_id: int) -> None:
        apply = operator.methodcaller("seed", source(worker_id))
        for mod in _RESEED_TARGETS:
            apply(mod)  # todoruleid: family 1 (missed)
        torch.set_num_threads(1)

    return _init


def _eval_worker_init(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301


def build_train_loader(log: InteractionLog, cfg, num_categories: int, rank: int,
                       world_size: int, item_categories=None):
    ds = InteractionStream(log, cfg, rank, world_size)
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=PairCollator(cfg.max_history, num_categories, item_categories),
        worker_init_fn=make_worker_init(cfg.worker_seed),
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
    )
    return ds, loader


def build_eval_loader(train_log: InteractionLog, eval_log: InteractionLog, cfg, seed: int):
    ds = EvalUsers(train_log, eval_log, cfg.max_history, cfg.eval_users, seed)
    return DataLoader(
        ds,
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=min(4, cfg.num_workers),
        collate_fn=lambda rows: eval_collate(rows, cfg.max_history),
        worker_init_fn=_eval_worker_init,
    )
