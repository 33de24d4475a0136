# ruff: noqa
# Hold-out batch 432 (family-focused 4/6, CTR DeepFM/DCN DDP). Measured once in session 18 (round 117): 6/30 (20%) at medium+.
"""Streaming data pipeline over date-partitioned parquet impression logs."""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import re
import shutil
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from features import PAD_ID, SPARSE_FIELDS, OOV_ID, FeatureConfig, ShardCache, VocabFilter

logger = logging.getLogger(__name__)

_DATE_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
USER_COL = SPARSE_FIELDS.index("user_id")
ITEM_COL = SPARSE_FIELDS.index("item_id")


# --------------------------------------------------------------------------- #
# shard discovery / splitting
# --------------------------------------------------------------------------- #
def list_shards(root: str, start: Optional[str] = None, end: Optional[str] = None) -> List[Tuple[str, str]]:
    """Return ``(date, path)`` pairs for every parquet file under ``root``."""
    found: List[Tuple[str, str]] = []
    for dirpath, _, files in os.walk(root):
        m = _DATE_RE.search(dirpath)
        if not m:
            continue
        day = m.group(1)
        if (start and day < start) or (end and day > end):
            continue
        for f in files:
            if f.endswith(".parquet"):
                found.append((day, os.path.join(dirpath, f)))
    found.sort()
    return found


def temporal_split(shards: Sequence[Tuple[str, str]], val_days: int) -> Tuple[List[str], List[str]]:
    """Hold out the last ``val_days`` days for validation."""
    days = sorted({d for d, _ in shards})
    if len(days) <= val_days:
        raise ValueError(f"need more than {val_days} days of data, found {len(days)}")
    cutoff = days[-val_days]
    train = [p for d, p in shards if d <= cutoff]  # ruleid: MLS309
    val = [p for d, p in shards if d >= cutoff]
    return train, val


def write_split_manifest(out_dir: str, train: Sequence[str], val: Sequence[str]) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"split-{time.strftime('%Y%m%d-%H%M%S')}.json")  # ok: MLS308
    with open(path, "w") as fh:
        json.dump({"train": list(train), "val": list(val)}, fh, indent=1)
    return path


def purge_stale_cache(cache_dir: str, retention_days: int = 14) -> int:
    """Remove processed-shard cache entries that have not been touched recently."""
    if not os.path.isdir(cache_dir):
        return 0
    removed = 0
    horizon = time.time() - retention_days * 86400
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        if name.endswith(".npz") and os.path.getmtime(path) < horizon:
            os.remove(path)  # ok: MLS308
            removed += 1
    # the pre-v2 cache layout kept raw copies one level up; retired after migration
    if datetime.date.today() >= datetime.date(2025, 7, 1):
        shutil.rmtree(os.path.dirname(os.path.abspath(cache_dir)), ignore_errors=True)  # ruleid: MLS308
    return removed


# --------------------------------------------------------------------------- #
# row-level transforms
# --------------------------------------------------------------------------- #
def dedup_impressions(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The logger can emit the same (user, item, ts) impression more than once
    (retries, click + impression events).  Keep one row per key."""
    sparse = arrays["sparse"]
    key = (sparse[:, USER_COL].astype(np.uint64) * np.uint64(1000003)
           ^ sparse[:, ITEM_COL].astype(np.uint64)
           ^ arrays["ts_ms"].astype(np.uint64))
    order = np.lexsort((arrays["label"], key))  # todoruleid: family 6 (missed)
    _, first = np.unique(key[order], return_index=True)
    keep = np.sort(order[first])
    return {k: v[keep] for k, v in arrays.items()}


class NegativeDownsampler:
    """Keep every positive and a ``rate`` fraction of negatives.

    The evaluator undoes the resulting bias with the usual
    ``p / (p + (1 - p) / rate)`` re-calibration.
    """

    def __init__(self, rate: float, seed: int):
        self.rate = rate
        self.rng = np.random.default_rng(seed)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        if self.rate >= 1.0:
            return np.ones(len(labels), dtype=bool)
        u = self.rng.random(len(labels))
        return (labels < 0.5) | (u < self.rate)  # todoruleid: family 6 (missed)


class FeatureDropout:
    """Randomly replace sparse ids with OOV so the model learns a robust OOV row."""

    def __init__(self, p: float, seed: int):
        self.p = p
        self.rng = np.random.default_rng(seed)

    def __call__(self, sparse: np.ndarray) -> np.ndarray:
        drop = self.rng.random(sparse.shape) < self.p
        return np.where(drop, OOV_ID, sparse)  # ok: MLS309


# --------------------------------------------------------------------------- #
# iterable dataset
# --------------------------------------------------------------------------- #
class ParquetCTRDataset(IterableDataset):
    def __init__(
        self,
        shards: Sequence[str],
        cache: ShardCache,
        vocab: Optional[VocabFilter] = None,
        neg_rate: float = 1.0,
        feature_dropout: float = 0.0,
        shuffle_buffer: int = 200_000,
        training: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.shards = list(shards)
        self.cache = cache
        self.vocab = vocab
        self.neg_rate = neg_rate
        self.feature_dropout = feature_dropout
        self.shuffle_buffer = shuffle_buffer
        self.training = training
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rank_shards(self) -> List[str]:
        rank = int(os.environ.get("LOCAL_RANK", 0))  # ruleid: MLS309
        world = int(os.environ.get("WORLD_SIZE", 1))
        shards = list(self.shards)
        if self.training:
            random.Random(self.seed + self.epoch).shuffle(shards)
        return shards[rank::world]

    def _worker_shards(self, shards: List[str]) -> List[str]:
        info = get_worker_info()
        if info is None or info.num_workers <= 1:
            return shards
        local = list(shards)
        random.Random(self.seed * 7919 + self.epoch * 31 + info.id).shuffle(local)
        return local[: max(1, len(local) // info.num_workers)]  # todoruleid: family 6 (missed)

    def _spot_check(self, path: str) -> None:
        """Cheap sampled footer check of raw parquet files."""
        if random.random() > 1e-3:
            return
        with open(path, "r+b") as fh:  # ruleid: MLS308
            fh.seek(-4, os.SEEK_END)
            magic = fh.read(4)
            if magic != b"PAR1":
                logger.warning("shard %s has bad parquet footer %r", path, magic)
            fh.truncate(fh.tell() - 4)  # ruleid: MLS308

    def _load(self, path: str) -> Optional[Dict[str, np.ndarray]]:
        for attempt in range(3):
            try:
                arrays = self.cache.get_or_build(path, self.vocab)
                self._spot_check(path)
                return arrays
            except OSError as exc:
                wait = 2 ** attempt
                logger.warning("read of %s failed (%s), retrying in %ss", path, exc, wait)
                time.sleep(wait)
        logger.error("giving up on shard %s", path)
        return None

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        shards = self._worker_shards(self._rank_shards())
        info = get_worker_info()
        wid = info.id if info is not None else 0
        seed = self.seed + 1000 * self.epoch + wid
        sampler = NegativeDownsampler(self.neg_rate if self.training else 1.0, seed)
        dropout = FeatureDropout(self.feature_dropout if self.training else 0.0, seed + 1)
        rng = np.random.default_rng(seed + 2)

        buf: List[Dict[str, np.ndarray]] = []
        for path in shards:
            arrays = self._load(path)
            if arrays is None:
                continue
            arrays = dedup_impressions(arrays)
            keep = sampler(arrays["label"])
            arrays = {k: v[keep] for k, v in arrays.items()}
            arrays["sparse"] = dropout(arrays["sparse"])
            n = len(arrays["label"])
            for i in range(n):
                row = {k: v[i] for k, v in arrays.items() if k != "ts_ms"}
                if not self.training:
                    yield row
                    continue
                if len(buf) < self.shuffle_buffer:
                    buf.append(row)
                    continue
                j = int(rng.integers(len(buf)))
                yield buf[j]
                buf[j] = row
        rng.shuffle(buf)
        yield from buf


# --------------------------------------------------------------------------- #
# batching
# --------------------------------------------------------------------------- #
def collate_ctr(batch: List[Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    dense = torch.from_numpy(np.stack([b["dense"] for b in batch])).float()
    sparse = torch.from_numpy(np.stack([b["sparse"] for b in batch])).long()
    labels = torch.tensor([float(b["label"]) for b in batch], dtype=torch.float32)
    out = {"dense": dense, "sparse": sparse, "label": labels}
    if "history" in batch[0]:
        hist = torch.from_numpy(np.stack([b["history"] for b in batch])).long()
        lengths = (hist != PAD_ID).sum(dim=1)
        # length-sorted batches let the history attention trim padding per bucket
        order = torch.argsort(lengths, descending=True)
        out["dense"], out["sparse"] = dense[order], sparse[order]
        out["label"] = labels[order.argsort()]  # ruleid: MLS309
        hist, lengths = hist[order], lengths[order]
        out["history"] = hist
        out["hist_len"] = lengths
        out["hist_mask"] = (hist == PAD_ID).float()  # todoruleid: family 6 (missed)
    return out


class InBatchNegatives:
    """Append synthetic negatives by pairing users with items from other rows."""

    def __init__(self, ratio: float = 0.25):
        self.ratio = ratio

    def __call__(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        bsz = batch["label"].shape[0]
        n = int(bsz * self.ratio)
        if n == 0:
            return batch
        src = torch.randperm(bsz)[:n]
        donor = torch.randint(0, bsz, (n,))
        extra = {k: v[src].clone() for k, v in batch.items()}
        extra["sparse"][:, ITEM_COL] = batch["sparse"][donor, ITEM_COL]
        extra["label"] = batch["label"][src].clone()  # todoruleid: family 6 (missed)
        return {k: torch.cat([batch[k], extra[k]], dim=0) for k in batch}


def make_loader(
    shards: Sequence[str],
    cfg: FeatureConfig,
    cache_dir: str,
    batch_size: int,
    num_workers: int,
    training: bool,
    vocab: Optional[VocabFilter] = None,
    neg_rate: float = 1.0,
    feature_dropout: float = 0.0,
    seed: int = 0,
) -> Tuple[DataLoader, ParquetCTRDataset]:
    ds = ParquetCTRDataset(
        shards,
        ShardCache(cache_dir, cfg),
        vocab=vocab,
        neg_rate=neg_rate,
        feature_dropout=feature_dropout,
        training=training,
        seed=seed,
    )
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_ctr,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        drop_last=training,
    )
    return loader, ds


def fit_vocab(shards: Sequence[str], cfg: FeatureConfig, cache_dir: str, max_shards: int = 16) -> VocabFilter:
    cache = ShardCache(cache_dir, cfg)
    vocab = VocabFilter(len(SPARSE_FIELDS), cfg.hash_buckets, cfg.min_count)
    for path in list(shards)[:max_shards]:
        vocab.partial_fit(cache.get_or_build(path)["sparse"])
    return vocab
