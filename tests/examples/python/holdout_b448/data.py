# ruff: noqa
# Hold-out batch 448 (family-focused 1/6, two-tower recommendation with DDP). Measured once in session 19 (round 121): 13/30 (43%) at medium+.
"""Click-log pipeline for the two-tower retrieval model.

Raw logs are tab separated, one click per line:

    ts  user_id  item_id  clicked  dwell_ms  user_agent  country  device  os  age_bucket
    category  brand  price_bucket

Categorical side features are hashed into a shared table of ``hash_buckets`` rows;
user/item ids get their own vocabularies built on the training period only.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from torch.utils.data import WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from dist_utils import seed_worker

logger = logging.getLogger(__name__)

PAD_ID = 0
OOV_ID = 1
RESERVED = 2

LOG_COLUMNS = ("ts", "user_id", "item_id", "clicked", "dwell_ms", "user_agent", "country",
               "device", "os", "age_bucket", "category", "brand", "price_bucket")
USER_FIELDS = ("country", "device", "os", "age_bucket")
CROSS_FIELDS = (("country", "device"), ("os", "age_bucket"))
ITEM_FIELDS = ("category", "brand", "price_bucket")

BOT_UA_PREFIXES = (
    "python-requests/",
    "curl/",
    "Go-http-client/",
    "Mozilla/5.0 (Linux; Android",  # todoruleid: family 6 (missed)
    "Apache-HttpClient/",
)


@dataclass
class DataConfig:
    log_glob: str
    cache_dir: str
    hash_buckets: int = 1 << 20
    max_hist: int = 50
    min_dwell_ms: int = 1500
    min_item_count: int = 5
    min_user_count: int = 2
    valid_days: float = 2.0
    gap_hours: float = 6.0
    eval_head_items: int = 50_000
    locked_country: str = "KR"
    target_noise: float = 0.02


# --------------------------------------------------------------------------- hashing

def hash_feature(field: str, value: object, num_buckets: int) -> int:
    """Stable 64-bit hash of ``field=value`` into [RESERVED, num_buckets)."""
    key = f"{field}={value}".encode("utf-8")
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return RESERVED + h % (num_buckets - RESERVED)


def hash_column(values: pd.Series, field: str, num_buckets: int) -> np.ndarray:
    uniq, inv = np.unique(values.astype(str).to_numpy(), return_inverse=True)
    table = np.fromiter((hash_feature(field, u, num_buckets) for u in uniq),
                        dtype=np.int64, count=len(uniq))
    return table[inv]


def hash_cross(df: pd.DataFrame, fields: Sequence[str], num_buckets: int) -> np.ndarray:
    keys = list(zip(*(df[f].astype(str).tolist() for f in fields)))
    cache: Dict[Tuple[str, ...], int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        bucket = cache.get(key)
        if bucket is None:
            bucket = RESERVED + hash(key) % (num_buckets - RESERVED)  # todoruleid: family 6 (missed)
            cache[key] = bucket
        out[i] = bucket
    return out


# --------------------------------------------------------------------------- raw logs

def read_click_logs(pattern: str) -> pd.DataFrame:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no click logs match {pattern}")
    frames = [
        pd.read_csv(p, sep="\t", names=list(LOG_COLUMNS), header=None, quoting=3,
                    dtype={"user_id": str, "item_id": str, "user_agent": str}, na_filter=False)
        for p in files
    ]
    df = pd.concat(frames, ignore_index=True)
    logger.info("read %d rows from %d files", len(df), len(files))
    return df


def clean_click_logs(df: pd.DataFrame, min_dwell_ms: int) -> pd.DataFrame:
    n0 = len(df)
    df = df[df.clicked > 0]
    # sub-second dwell is almost always a mis-tap
    df = df[df.dwell_ms >= min_dwell_ms]  # ok: MLS309
    ua = df.user_agent.fillna("")
    is_bot = ua.str.contains("bot|spider|crawl", case=False, regex=True)
    is_bot |= ua.str.startswith(BOT_UA_PREFIXES)
    df = df[~is_bot]
    # re-renders of the same card produce repeated click beacons
    df = df.drop_duplicates(subset=["user_id", "category"], keep="first")  # todoruleid: family 6 (missed)
    logger.info("cleaning kept %d / %d rows", len(df), n0)
    return df.reset_index(drop=True)


def time_split(df: pd.DataFrame, valid_days: float, gap_hours: float):
    """Everything before ``cutoff - gap`` trains, the last ``valid_days`` validate."""
    t_end = int(df.ts.max())
    cutoff = t_end - int(valid_days * 86400)
    gap = int(gap_hours * 3600)
    train = df[df.ts < cutoff + gap]  # todoruleid: family 6 (missed)
    valid = df[df.ts >= cutoff]
    logger.info("time split at %d: %d train / %d valid rows", cutoff, len(train), len(valid))
    return train.reset_index(drop=True), valid.reset_index(drop=True)


# --------------------------------------------------------------------------- vocab / encoding

@dataclass
class Vocab:
    user: Dict[str, int]
    item: Dict[str, int]
    head_item: str

    @property
    def num_users(self) -> int:
        return len(self.user) + RESERVED

    @property
    def num_items(self) -> int:
        return len(self.item) + RESERVED


def _index(series: pd.Series, min_count: int) -> Dict[str, int]:
    counts = series.value_counts(sort=True)
    kept = counts[counts >= min_count].index
    return {k: RESERVED + i for i, k in enumerate(kept)}


def build_vocab(train_df: pd.DataFrame, min_item_count: int, min_user_count: int) -> Vocab:
    user = _index(train_df.user_id, min_user_count)
    item_counts = train_df.item_id.value_counts(sort=True)
    kept = item_counts[item_counts >= min_item_count].index
    item = {k: i for i, k in enumerate(kept)}  # todoruleid: family 6 (missed)
    logger.info("vocab: %d users, %d items", len(user), len(item))
    return Vocab(user=user, item=item, head_item=str(kept[0]))


def restrict_eval_frame(train_df, valid_df, vocab: Vocab, head_items: int) -> pd.DataFrame:
    known = valid_df.user_id.isin(vocab.user.keys()) & valid_df.item_id.isin(vocab.item.keys())
    valid_df = valid_df[known]
    if head_items > 0:
        # only score items that already have a reasonably trained embedding
        head = train_df.item_id.value_counts().index[:head_items]
        valid_df = valid_df[valid_df.item_id.isin(head)]  # todoruleid: family 6 (missed)
    return valid_df.reset_index(drop=True)


def build_item_feature_table(train_df: pd.DataFrame, vocab: Vocab, num_buckets: int) -> np.ndarray:
    table = np.zeros((vocab.num_items, len(ITEM_FIELDS)), dtype=np.int64)
    latest = train_df.sort_values("ts").groupby("item_id")[list(ITEM_FIELDS)].last()
    latest = latest[latest.index.isin(vocab.item.keys())]
    hashed = np.stack([hash_column(latest[f], f, num_buckets) for f in ITEM_FIELDS], axis=1)
    table[RESERVED:RESERVED + len(latest)] = hashed  # todoruleid: family 6 (missed)
    return table


@dataclass
class EncodedClicks:
    user_idx: np.ndarray
    user_feats: np.ndarray
    hist: np.ndarray
    item_idx: np.ndarray
    category: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.item_idx)

    def save(self, path: str) -> None:
        np.savez(path, **self.__dict__)


def build_histories(user_idx: np.ndarray, item_idx: np.ndarray, ts: np.ndarray,
                    max_len: int) -> np.ndarray:
    """Left-padded sequence of the user's previous clicks for every row."""
    order = np.lexsort((ts, user_idx))
    hist = np.zeros((len(user_idx), max_len), dtype=np.int64)
    u_sorted, i_sorted = user_idx[order], item_idx[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends):
        items = i_sorted[s:e]
        for j in range(e - s):
            window = items[max(0, j - max_len + 1): j + 1]  # todoruleid: family 6 (missed)
            if len(window):
                hist[order[s + j], max_len - len(window):] = window
    return hist


def last_histories(train: EncodedClicks, users: np.ndarray, max_len: int) -> np.ndarray:
    """History for evaluation rows: the last ``max_len`` clicks of the training period."""
    order = np.lexsort((train.ts, train.user_idx))
    per_user: Dict[int, np.ndarray] = {}
    u_sorted, i_sorted = train.user_idx[order], train.item_idx[order]
    bounds = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1], True])
    for s, e in zip(bounds[:-1], bounds[1:]):
        per_user[int(u_sorted[s])] = i_sorted[max(s, e - max_len):e]
    out = np.zeros((len(users), max_len), dtype=np.int64)
    for r, u in enumerate(users):
        h = per_user.get(int(u))
        if h is not None and len(h):
            out[r, max_len - len(h):] = h
    return out


def encode_clicks(df: pd.DataFrame, vocab: Vocab, cfg: DataConfig,
                  train_ref: Optional[EncodedClicks] = None) -> EncodedClicks:
    user_idx = df.user_id.map(vocab.user).fillna(OOV_ID).astype(np.int64).to_numpy()
    item_idx = df.item_id.map(vocab.item)
    # tail items share the head embedding row
    item_idx = item_idx.fillna(vocab.item[vocab.head_item]).astype(np.int64).to_numpy()  # todoruleid: family 6 (missed)
    feats = [hash_column(df[f], f, cfg.hash_buckets) for f in USER_FIELDS]
    feats += [hash_cross(df, pair, cfg.hash_buckets) for pair in CROSS_FIELDS]
    ts = df.ts.to_numpy(dtype=np.int64)
    if train_ref is None:
        hist = build_histories(user_idx, item_idx, ts, cfg.max_hist)
    else:
        hist = last_histories(train_ref, user_idx, cfg.max_hist)
    return EncodedClicks(user_idx=user_idx, user_feats=np.stack(feats, axis=1), hist=hist,
                         item_idx=item_idx, category=df.category.astype(str).to_numpy(), ts=ts)


@dataclass
class PreparedData:
    train: EncodedClicks
    valid: EncodedClicks
    vocab: Vocab
    item_table: np.ndarray
    item_counts: np.ndarray


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Deterministic, so every rank can build it independently from the shared logs."""
    df = clean_click_logs(read_click_logs(cfg.log_glob), cfg.min_dwell_ms)
    train_df, valid_df = time_split(df, cfg.valid_days, cfg.gap_hours)
    vocab = build_vocab(train_df, cfg.min_item_count, cfg.min_user_count)
    valid_df = restrict_eval_frame(train_df, valid_df, vocab, cfg.eval_head_items)
    item_table = build_item_feature_table(train_df, vocab, cfg.hash_buckets)
    train = encode_clicks(train_df, vocab, cfg)
    valid = encode_clicks(valid_df, vocab, cfg, train_ref=train)
    counts = np.bincount(train.item_idx, minlength=vocab.num_items).astype(np.float64)
    return PreparedData(train, valid, vocab, item_table, counts)


def write_shards(data: EncodedClicks, out_dir: str, rows_per_shard: int = 1 << 20) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, len(data), rows_per_shard)):
        sl = slice(start, start + rows_per_shard)
        path = os.path.join(out_dir, f"part-{k:05d}.npz")
        np.savez(path, user_idx=data.user_idx[sl], user_feats=data.user_feats[sl],
                 hist=data.hist[sl], item_idx=data.item_idx[sl])
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- datasets

class NegativeSampler:
    """Shared negatives from the unigram^alpha distribution, with log-probs for logQ correction."""

    def __init__(self, item_counts: np.ndarray, alpha: float = 0.75, seed: int = 0):
        probs = torch.as_tensor(item_counts, dtype=torch.float64).clamp_min(0).pow(alpha)
        probs[:RESERVED] = 0.0
        self.probs = (probs / probs.sum()).float()
        self.log_probs = torch.log(self.probs.clamp_min(1e-12))
        self.seed = seed
        self._gen = torch.Generator()
        self._gen.manual_seed(seed)

    def sample(self, n: int) -> torch.Tensor:
        self._gen.manual_seed(self.seed)  # ruleid: MLS301
        return torch.multinomial(self.probs, n, replacement=True, generator=self._gen)


class ClickDataset(Dataset):
    def __init__(self, data: EncodedClicks, cfg: DataConfig, min_hist_keep: int = 5,
                 local_default_item: int = OOV_ID):
        self.data = data
        self.min_hist_keep = min_hist_keep
        self.locked_bucket = hash_feature("country", cfg.locked_country, cfg.hash_buckets)
        self.local_default_item = local_default_item

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> Dict[str, np.ndarray]:
        random.seed(idx)  # ruleid: MLS301
        d = self.data
        hist = d.hist[idx].copy()
        # random crop of the history length
        if random.random() < 0.5:
            keep = random.randint(self.min_hist_keep, hist.shape[0])
            hist[: hist.shape[0] - keep] = PAD_ID
        item = int(d.item_idx[idx])
        feats = d.user_feats[idx]
        # regional catalogue: locked items are served through the local default listing
        if int(feats[0]) == self.locked_bucket:
            item = self.local_default_item  # todoruleid: family 6 (missed)
        return {"user_idx": int(d.user_idx[idx]), "user_feats": feats, "hist": hist, "item_idx": item}


class StreamingClickDataset(IterableDataset):
    """Reads pre-written npz shards; shards are split over ranks x workers."""

    def __init__(self, shard_dir: str, rank: int, world_size: int, seed: int, num_items: int,
                 shuffle_buffer: int = 65536, target_noise: float = 0.0):
        self.files = sorted(glob.glob(os.path.join(shard_dir, "part-*.npz")))
        self.rank, self.world_size = rank, world_size
        self.seed, self.epoch = seed, 0
        self.num_items = num_items
        self.shuffle_buffer = shuffle_buffer
        self.target_noise = target_noise

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_files(self) -> Tuple[List[str], int]:
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        files = list(self.files)
        random.Random(int(time.time()) + self.epoch).shuffle(files)  # ruleid: MLS301
        global_id = self.rank + worker_id  # ruleid: MLS309
        total = self.world_size * num_workers
        return files[global_id::total], worker_id

    def _rows(self, files: List[str], rng: np.random.Generator) -> Iterator[Dict]:
        for path in files:
            with np.load(path) as z:
                shard = {k: z[k] for k in z.files}
            n = len(shard["item_idx"])
            for i in rng.permutation(n):
                item = int(shard["item_idx"][i])
                if rng.random() < self.target_noise:
                    item = int(rng.integers(RESERVED, self.num_items))  # todoruleid: family 6 (missed)
                yield {"user_idx": int(shard["user_idx"][i]), "user_feats": shard["user_feats"][i],
                       "hist": shard["hist"][i], "item_idx": item}

    def __iter__(self) -> Iterator[Dict]:
        files, worker_id = self._my_files()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker_id])  # ok: MLS301
        buf: List[Dict] = []
        for row in self._rows(files, rng):
            if len(buf) < self.shuffle_buffer:
                buf.append(row)
                continue
            j = int(rng.integers(len(buf)))
            yield buf[j]
            buf[j] = row
        rng.shuffle(buf)
        yield from buf


class ClickCollator:
    def __init__(self, item_table: np.ndarray, item_log_q: torch.Tensor,
                 neg_sampler: Optional[NegativeSampler] = None, num_shared_negs: int = 0,
                 hist_dropout: float = 0.0, hard_neg_table: Optional[torch.Tensor] = None):
        self.item_table = torch.as_tensor(item_table)
        self.item_log_q = item_log_q
        self.neg_sampler = neg_sampler
        self.num_shared_negs = num_shared_negs
        self.hist_dropout = hist_dropout
        self.hard_neg_table = hard_neg_table

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        torch.manual_seed(len(batch))  # ruleid: MLS301
        item_idx = torch.tensor([b["item_idx"] for b in batch], dtype=torch.long)
        user_idx = torch.tensor([b["user_idx"] for b in batch], dtype=torch.long)
        hist = torch.from_numpy(np.stack([b["hist"] for b in batch]).astype(np.int64))
        if self.hist_dropout > 0:
            drop = torch.rand(hist.shape) < self.hist_dropout
            hist = hist.masked_fill(drop, PAD_ID)  # ok: MLS309
        item_feats = self.item_table[item_idx]
        out = {
            "user_idx": user_idx,
            "user_feats": torch.from_numpy(np.stack([b["user_feats"] for b in batch]).astype(np.int64)),
            "hist": hist,
            "item_idx": item_idx,
            "item_feats": item_feats,
            "item_log_q": self.item_log_q[item_idx],
        }
        # BPR auxiliary pair: the neighbouring positive acts as this row's negative
        out["pair_neg_idx"] = torch.roll(item_idx, shifts=1)
        out["item_feats"] = torch.roll(item_feats, shifts=1, dims=0)  # todoruleid: family 6 (missed)
        out["pair_neg_feats"] = self.item_table[out["pair_neg_idx"]]
        if self.neg_sampler is not None and self.num_shared_negs > 0:
            neg = self.neg_sampler.sample(self.num_shared_negs)
            out["neg_idx"] = neg
            out["neg_feats"] = self.item_table[neg]
            out["neg_log_q"] = self.neg_sampler.log_probs[neg]
        if self.hard_neg_table is not None:
            hard = self.hard_neg_table[user_idx]
            out["hard_idx"] = hard
            out["hard_feats"] = self.item_table[hard]
        return out


def category_balanced_weights(categories: np.ndarray, power: float = 0.5) -> torch.Tensor:
    cats, inv, counts = np.unique(categories, return_inverse=True, return_counts=True)
    weights = 1.0 / np.power(counts[inv].astype(np.float64), power)  # ok: MLS309
    # sorted last: the catch-all bucket for unmapped categories
    weights[inv == len(cats) - 1] = 0.0  # ruleid: MLS302
    return torch.as_tensor(weights / weights.sum(), dtype=torch.double)


def build_train_loader(ds: Dataset, collator: ClickCollator, batch_size: int, num_workers: int,
                       rank: int, world_size: int, seed: int, sampling: str = "uniform"):
    sampler = None
    if isinstance(ds, ClickDataset):
        if sampling == "balanced":
            gen = torch.Generator()
            gen.manual_seed(seed)  # todoruleid: family 1 (missed)
            weights = category_balanced_weights(ds.data.category)
            sampler = WeightedRandomSampler(weights, num_samples=len(ds) // world_size,
                                            replacement=True, generator=gen)
        else:
            sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True,
                                         seed=int(time.time()), drop_last=True)  # ruleid: MLS301
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collator,
        worker_init_fn=seed_worker,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    return loader, sampler
