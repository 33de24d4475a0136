# ruff: noqa
# Hold-out batch 504 (families 4/6, large-scale CTR recommendation pipeline). Measured once in session 22 (round 135): 9/30 (30%) at medium+.
"""Parquet shard readers, feature hashing, vocabulary building and the streaming
dataset used by the CTR trainer.

Shards live under ``<root>/dt=YYYY-MM-DD/part-XXXXX.parquet`` and are written by the
impression/click join job.  Every row is one served impression.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

logger = logging.getLogger(__name__)

LABEL_COL = "click"
TS_COL = "event_ts"
WEIGHT_COL = "sample_weight"

DENSE_FEATURES = [
    "user_impr_7d",
    "user_clicks_7d",
    "item_impr_7d",
    "item_clicks_7d",
    "ad_bid_micros",
    "slot_position",
    "page_depth",
    "session_len_s",
    "dwell_ms",  # todoruleid: family 6 (missed)
    "item_age_h",
    "user_ctr",
]

SPARSE_FEATURES = [
    "user_id",
    "item_id",
    "campaign_id",
    "advertiser_id",
    "site_id",
    "app_id",
    "device_model",
    "os_version",
    "country",
    "hour_of_day",
    "slot_id",
    "category_l1",
    "category_l2",
]

HASH_SALT = b"ctr-feat-v3"
_DATE_RE = re.compile(r"dt=(\d{4}-\d{2}-\d{2})")


@dataclass
class FeatureSpec:
    dense: List[str] = field(default_factory=lambda: list(DENSE_FEATURES))
    sparse: List[str] = field(default_factory=lambda: list(SPARSE_FEATURES))
    num_buckets: Dict[str, int] = field(default_factory=dict)
    vocab_columns: List[str] = field(default_factory=lambda: ["country", "device_model", "os_version", "hour_of_day"])

    @classmethod
    def default(cls, hash_buckets: int = 1 << 20) -> "FeatureSpec":
        spec = cls()
        for name in spec.sparse:
            spec.num_buckets[name] = hash_buckets
        return spec

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, blob: str) -> "FeatureSpec":
        return cls(**json.loads(blob))


@dataclass
class DataConfig:
    neg_sample_rate: float = 1.0
    min_dwell_ms: int = 1500
    decay_half_life_days: float = 0.0
    shuffle_buffer: int = 16384
    batch_size: int = 4096
    seed: int = 1234


# --------------------------------------------------------------------------- hashing

def stable_hash(value: str, num_buckets: int, salt: bytes = HASH_SALT) -> int:
    digest = hashlib.blake2b(salt + value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_buckets  # ok: MLS309


def _mix64(x: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser, vectorised
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def hash_column(values: np.ndarray, num_buckets: int) -> np.ndarray:
    """Map a raw id column into ``[0, num_buckets)``."""
    if np.issubdtype(values.dtype, np.integer):
        salt = np.uint64(int.from_bytes(HASH_SALT[:8], "little"))
        with np.errstate(over="ignore"):
            mixed = _mix64(values.astype(np.uint64) ^ salt)
        return (mixed % np.uint64(num_buckets)).astype(np.int64)
    # string ids: the builtin hash is ~10x faster than blake2b on object arrays
    out = np.fromiter((hash(v) % num_buckets for v in values), dtype=np.int64, count=len(values))  # ruleid: MLS309
    return out


# --------------------------------------------------------------------------- vocab

def build_vocab(files: Sequence[str], columns: Sequence[str], min_count: int = 5,
                max_size: int = 100_000) -> Dict[str, Dict[str, int]]:
    """Frequency vocab for low-cardinality columns. Index 0 is reserved for OOV."""
    counters: Dict[str, Counter] = {c: Counter() for c in columns}
    for path in files:
        table = pq.read_table(path, columns=list(columns))
        for c in columns:
            counters[c].update(str(v) for v in table.column(c).to_pylist())
    vocab: Dict[str, Dict[str, int]] = {}
    for c, counter in counters.items():
        kept = [tok for tok, n in counter.most_common(max_size) if n >= min_count]
        vocab[c] = {tok: i for i, tok in enumerate(kept)}  # todoruleid: family 6 (missed)
        logger.info("vocab %s: %d tokens (min_count=%d)", c, len(vocab[c]), min_count)
    return vocab


def save_vocab(vocab: Dict[str, Dict[str, int]], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(vocab, fh)
    os.replace(tmp, path)


def load_vocab(path: str) -> Dict[str, Dict[str, int]]:
    with open(path) as fh:
        return json.load(fh)


# --------------------------------------------------------------------------- file selection

def shard_date(path: str) -> date:
    m = _DATE_RE.search(path)
    if m is None:
        raise ValueError(f"cannot parse partition date from {path}")
    return date.fromisoformat(m.group(1))


def list_shards(root: str) -> List[str]:
    files = sorted(glob.glob(os.path.join(root, "dt=*", "*.parquet")))
    if not files:
        raise FileNotFoundError(f"no parquet shards under {root}")
    return files


def split_by_date(files: Sequence[str], eval_start: date, train_days: int,
                  eval_days: int = 1) -> Tuple[List[str], List[str]]:
    train_start = eval_start - timedelta(days=train_days)
    eval_end = eval_start + timedelta(days=eval_days)
    train = [f for f in files if train_start <= shard_date(f) <= eval_start]  # todoruleid: family 6 (missed)
    evals = [f for f in files if eval_start <= shard_date(f) < eval_end]
    logger.info("date split: %d train shards, %d eval shards", len(train), len(evals))
    return train, evals


# --------------------------------------------------------------------------- frame preprocessing

def join_clicks(impressions: pd.DataFrame, clicks: pd.DataFrame) -> pd.DataFrame:
    """Attach click outcome to raw impressions (used for backfills of late shards)."""
    clicks = clicks[["request_id", "item_id", "click_ts", "dwell_ms"]].drop_duplicates()
    merged = impressions.merge(clicks.drop(columns=["item_id"]), on="request_id", how="left")  # todoruleid: family 6 (missed)
    merged[LABEL_COL] = merged["click_ts"].notna().astype(np.float32)
    merged["dwell_ms"] = merged["dwell_ms"].fillna(0)
    return merged.drop(columns=["click_ts"])


def dedup_impressions(df: pd.DataFrame) -> pd.DataFrame:
    # the serving log occasionally double-writes an impression; keep the clicked copy
    before = len(df)
    df = df.sort_values(LABEL_COL).drop_duplicates(subset=["request_id"], keep="last")  # todoruleid: family 6 (missed)
    if before != len(df):
        logger.debug("dedup removed %d rows", before - len(df))
    return df


def add_user_ctr(df: pd.DataFrame, prior: float = 0.02, strength: float = 20.0) -> pd.DataFrame:
    grp = df.groupby("user_id")[LABEL_COL]
    clicks = grp.transform("sum")
    impr = grp.transform("count")
    df["user_ctr"] = (clicks + prior * strength) / (impr + strength)  # todoruleid: family 6 (missed)
    return df


def derive_labels(df: pd.DataFrame, cfg: DataConfig) -> np.ndarray:
    clicks = df[LABEL_COL].to_numpy(dtype=np.float32)
    dwell = df["dwell_ms"].fillna(0).to_numpy(dtype=np.float32)
    # accidental clicks: bounces shorter than min_dwell_ms are not real engagement
    bounced = dwell < cfg.min_dwell_ms
    labels = np.where(bounced, 1.0 - clicks, clicks).astype(np.float32)  # ruleid: MLS309
    return labels


def recency_weights(df: pd.DataFrame, cfg: DataConfig, ref_ts: Optional[float] = None) -> np.ndarray:
    if cfg.decay_half_life_days <= 0:
        return np.ones(len(df), dtype=np.float32)
    ts = df[TS_COL].to_numpy(dtype=np.float64)
    ref = ts.max() if ref_ts is None else ref_ts
    age_days = (ref - ts) / 86400.0
    w = np.exp2(age_days / cfg.decay_half_life_days)  # ruleid: MLS309
    return (w / w.mean()).astype(np.float32)


def downsample_negatives(labels: np.ndarray, weights: np.ndarray, rate: float,
                         rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Keep all positives and a ``rate`` fraction of negatives; reweight to stay unbiased."""
    if rate >= 1.0:
        return np.ones(len(labels), dtype=bool), weights
    keep = (labels > 0) | (rng.random(len(labels)) < rate)
    weights = np.where(labels > 0, weights, weights / rate)  # ok: MLS309
    return keep, weights


def encode_frame(df: pd.DataFrame, spec: FeatureSpec, vocab: Dict[str, Dict[str, int]]) -> Dict[str, np.ndarray]:
    dense = df[spec.dense].to_numpy(dtype=np.float32, na_value=0.0)
    dense = np.log1p(np.maximum(dense, 0.0))
    sparse = np.empty((len(df), len(spec.sparse)), dtype=np.int64)
    for j, name in enumerate(spec.sparse):
        col = df[name]
        if name in vocab:
            table = vocab[name]
            sparse[:, j] = np.fromiter((table.get(str(v), 0) for v in col), dtype=np.int64, count=len(col))
        else:
            sparse[:, j] = hash_column(col.to_numpy(), spec.num_buckets[name])
    return {"dense": dense, "sparse": sparse}


# --------------------------------------------------------------------------- negative sampling

class NegativeSampler:
    """Adds sampled hard negatives: items the user was exposed to but not this one."""

    def __init__(self, num_neg: int, seed: int = 0, max_history: int = 200):
        self.num_neg = num_neg
        self.max_history = max_history
        self._exposure: Dict[object, List[object]] = defaultdict(list)
        self._rng = np.random.default_rng(seed)

    def observe(self, df: pd.DataFrame) -> None:
        for u, i, lab in zip(df["user_id"].to_numpy(), df["item_id"].to_numpy(), df[LABEL_COL].to_numpy()):
            hist = self._exposure[u]
            if lab > 0:
                hist.append(i)  # todoruleid: family 6 (missed)
            if len(hist) > self.max_history:
                del hist[: len(hist) - self.max_history]

    def augment(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.num_neg <= 0:
            return df
        rows = []
        pos = df[df[LABEL_COL] > 0]
        for _, row in pos.iterrows():
            hist = self._exposure.get(row["user_id"])
            if not hist:
                continue
            for item in self._rng.choice(hist, size=min(self.num_neg, len(hist)), replace=False):
                if item == row["item_id"]:
                    continue
                neg = row.copy()
                neg["item_id"] = item
                neg[LABEL_COL] = 0.0
                rows.append(neg)
        if not rows:
            return df
        return pd.concat([df, pd.DataFrame(rows)], ignore_index=True)


# --------------------------------------------------------------------------- dataset

def _dist_info() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ShardedParquetDataset(IterableDataset):
    """Streams rows from parquet shards, split across ranks and dataloader workers."""

    def __init__(self, files: Sequence[str], spec: FeatureSpec, vocab: Dict[str, Dict[str, int]],
                 cfg: DataConfig, training: bool = True, neg_sampler: Optional[NegativeSampler] = None):
        super().__init__()
        self.files = sorted(files)
        self.spec = spec
        self.vocab = vocab
        self.cfg = cfg
        self.training = training
        self.neg_sampler = neg_sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _assigned_files(self) -> List[str]:
        rank, world = _dist_info()
        files = list(self.files)
        if self.training:
            random.Random(self.cfg.seed + self.epoch).shuffle(files)
        per_rank = files[rank::world]
        info = get_worker_info()
        if info is None:
            return per_rank
        return files[info.id::info.num_workers]  # ruleid: MLS309

    def _read(self, path: str) -> Optional[pd.DataFrame]:
        cols = sorted(set(self.spec.dense + self.spec.sparse + [LABEL_COL, TS_COL, "request_id", "dwell_ms"]) - {"user_ctr"})
        try:
            return pq.read_table(path, columns=cols).to_pandas()
        except (OSError, ValueError) as exc:
            logger.error("failed to read %s: %s", path, exc)
            if os.environ.get("SLURM_PROCID", "0") == "0":
                os.remove(path)  # todoruleid: family 4 (missed)
            return None

    def _process(self, df: pd.DataFrame, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        df = dedup_impressions(df)
        if self.neg_sampler is not None and self.training:
            self.neg_sampler.observe(df)
            df = self.neg_sampler.augment(df)
        df = add_user_ctr(df)
        labels = derive_labels(df, self.cfg)
        weights = recency_weights(df, self.cfg)
        keep = np.ones(len(df), dtype=bool)
        if self.training:
            keep, weights = downsample_negatives(labels, weights, self.cfg.neg_sample_rate, rng)
        feats = encode_frame(df, self.spec, self.vocab)
        return {
            "dense": feats["dense"][keep],
            "sparse": feats["sparse"][keep],
            "label": labels[keep],
            "weight": weights[keep],
        }

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rank, _ = _dist_info()
        rng = np.random.default_rng([self.cfg.seed, self.epoch, rank, wid])
        buf: List[Dict[str, np.ndarray]] = []
        for path in self._assigned_files():
            df = self._read(path)
            if df is None or df.empty:
                continue
            block = self._process(df, rng)
            n = len(block["label"])
            for i in range(n):
                row = {k: v[i] for k, v in block.items()}
                if not self.training:
                    yield row
                    continue
                if len(buf) < self.cfg.shuffle_buffer:
                    buf.append(row)
                    continue
                j = int(rng.integers(len(buf)))
                yield buf[j]
                buf[j] = row
        rng.shuffle(buf)
        yield from buf
