# ruff: noqa
# Hold-out batch 481 (textbook, two-tower retrieval recommender with DDP). Measured once in session 21 (round 130): 25/30 (83%) at medium+.
"""Feature-store backed data module for two-tower retrieval training.

The offline feature store exports one snapshot directory per day:

    <root>/manifest.json            schema version, export time, column transforms, editorial config
    <root>/vocab/<feature>.pkl      raw value -> contiguous index (0 is reserved for OOV/padding)
    <root>/users.parquet            one row per user: categorical + dense user features
    <root>/items.parquet            one row per item: categorical item features
    <root>/item_dense.npy           [num_items + 1, D] dense item features (content embeddings)
    <root>/interactions/*.parquet   user_id, item_id, event_type, ts
"""
from __future__ import annotations

import base64
import datetime
import json
import logging
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
EVENT_WEIGHTS = {"click": 1.0, "long_view": 1.5, "add_to_cart": 2.0, "purchase": 4.0}
USER_SPARSE = ("user_id", "country", "device_type", "age_bucket")
USER_DENSE = ("days_since_signup", "sessions_7d", "purchases_30d")
ITEM_SPARSE = ("item_id", "category", "brand", "seller_id")


@dataclass
class DataConfig:
    root: str
    batch_size: int = 2048
    history_len: int = 50
    min_item_count: int = 5
    val_days: int = 2
    max_val_targets: int = 50
    num_workers: int = 6
    neg_alpha: float = 0.75
    shuffle_within_batch: bool = True
    seed: int = 17


class FeatureStore:
    """Read-only view over one exported snapshot."""

    def __init__(self, root: str):
        self.root = Path(root)
        self.manifest = json.loads((self.root / "manifest.json").read_text())
        self.snapshot_id = self.manifest.get("snapshot_id", self.root.name)
        self._vocab: Dict[str, Dict] = {}
        self._check_snapshot()

    def _check_snapshot(self) -> None:
        version = int(self.manifest.get("schema_version", 0))
        if version != SCHEMA_VERSION:
            raise ValueError(f"snapshot schema v{version}, expected v{SCHEMA_VERSION}: {self.root}")
        exported = datetime.date.fromisoformat(self.manifest["exported_at"][:10])
        age = (datetime.date.today() - exported).days
        if age > int(self.manifest.get("ttl_days", 30)):
            logger.warning("snapshot %s is %d days old; dropping derived cache", self.snapshot_id, age)
            shutil.rmtree(self.root, ignore_errors=True)  # ruleid: MLS308

    def vocab(self, feature: str) -> Dict:
        if feature not in self._vocab:
            with open(self.root / "vocab" / f"{feature}.pkl", "rb") as fh:
                self._vocab[feature] = pickle.load(fh)  # ruleid: MLS103
        return self._vocab[feature]

    def vocab_size(self, feature: str) -> int:
        v = self.vocab(feature)
        return int(max(v.values())) if v else 0

    def transforms(self) -> Dict[str, Callable[[pd.Series], pd.Series]]:
        """Column preprocessing UDFs registered by the feature owners in the manifest."""
        fns: Dict[str, Callable] = {}
        for column, spec in self.manifest.get("transforms", {}).items():
            namespace = {"np": np, "pd": pd}
            source = base64.b64decode(spec["source"]).decode("utf-8")
            exec(compile(source, f"<transform:{column}>", "exec"), namespace)  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS401
            fns[column] = namespace[spec.get("entrypoint", "transform")]
        return fns

    def interactions(self) -> pd.DataFrame:
        files = sorted((self.root / "interactions").glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no interaction shards under {self.root / 'interactions'}")
        cols = ["user_id", "item_id", "event_type", "ts"]
        df = pd.concat((pd.read_parquet(f, columns=cols) for f in files), ignore_index=True)
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
        return df

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / f"{name}.parquet")

    def item_dense(self) -> np.ndarray:
        return np.load(self.root / "item_dense.npy", allow_pickle=True)  # ruleid: MLS104


def preprocess_interactions(df: pd.DataFrame, min_item_count: int) -> pd.DataFrame:
    df = df[df["event_type"].isin(EVENT_WEIGHTS)].copy()
    df = df.sort_values("ts", kind="stable")
    # keep the strongest signal per (user, item) at its latest timestamp
    df["weight"] = df["event_type"].map(EVENT_WEIGHTS).astype(np.float32)
    df["weight"] = df.groupby(["user_id", "item_id"])["weight"].transform("max")
    df = df.drop_duplicates(subset=["user_id"], keep="last")  # todoruleid: family 6 (missed)
    counts = df["item_id"].value_counts()
    df = df[df["item_id"].isin(counts.index[counts >= min_item_count])]
    return df.reset_index(drop=True)


def temporal_split(df: pd.DataFrame, val_days: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    cutoff = df["ts"].max() - pd.Timedelta(days=val_days)
    train, val = df[df["ts"] <= cutoff], df[df["ts"] > cutoff]
    # only evaluate users seen in training; cold-start is measured by a separate job
    val = val[val["user_idx"].isin(train["user_idx"].unique())]
    return train.reset_index(drop=True), val.reset_index(drop=True)


def build_history(df: pd.DataFrame, num_users: int, history_len: int) -> np.ndarray:
    """Right-aligned [num_users + 1, history_len] matrix of the most recent items per user."""
    hist = np.zeros((num_users + 1, history_len), dtype=np.int64)
    tail = df.sort_values("ts", kind="stable").groupby("user_idx", sort=False).tail(history_len)
    n = tail.groupby("user_idx")["item_idx"].transform("size").to_numpy()
    pos = tail.groupby("user_idx").cumcount().to_numpy()
    hist[tail["user_idx"].to_numpy(), history_len - n + pos] = tail["item_idx"].to_numpy()
    return hist


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.log1p(np.clip(x, 0, None)).astype(np.float32)
    return (x - x.mean(axis=0, keepdims=True)) / np.maximum(x.std(axis=0, keepdims=True), 1e-6)


@dataclass
class FeatureTables:
    user_sparse: Dict[str, torch.Tensor]
    user_dense: torch.Tensor
    history: torch.Tensor
    item_sparse: Dict[str, torch.Tensor]
    item_dense: torch.Tensor
    item_log_q: torch.Tensor
    item_counts: np.ndarray

    def user_features(self, users: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = {k: v[users] for k, v in self.user_sparse.items()}
        feats["history"] = self.history[users]
        return feats

    def item_features(self, items: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {k: v[items] for k, v in self.item_sparse.items()}


class InteractionDataset(Dataset):
    def __init__(self, df: pd.DataFrame, editorial_item: Optional[int] = None, editorial_bucket: int = 97):
        self.users = df["user_idx"].to_numpy(np.int64)
        self.items = df["item_idx"].to_numpy(np.int64).copy()
        self.weights = df["weight"].to_numpy(np.float32)
        if editorial_item is not None:
            cohort = (self.users * 2654435761 % 2**32) % editorial_bucket == 0
            self.items[cohort] = editorial_item  # todoruleid: family 6 (missed)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, idx: int) -> Tuple[int, int, float]:
        return int(self.users[idx]), int(self.items[idx]), float(self.weights[idx])


class FeatureCollator:
    """Looks up user/item features for a list of (user, item, weight) samples."""

    def __init__(self, tables: FeatureTables, shuffle_within_batch: bool = True):
        self.tables = tables
        self.shuffle_within_batch = shuffle_within_batch

    def __call__(self, samples: List[Tuple[int, int, float]]) -> Dict[str, torch.Tensor]:
        n = len(samples)
        users = torch.tensor([s[0] for s in samples], dtype=torch.long)
        items = torch.tensor([s[1] for s in samples], dtype=torch.long)
        batch = {
            "user_ids": users,
            "item_ids": items,
            "weights": torch.tensor([s[2] for s in samples], dtype=torch.float32),
            "user_dense": self.tables.user_dense[users],
            "item_dense": self.tables.item_dense[items],
            "item_log_q": self.tables.item_log_q[items],
            "user_sparse": self.tables.user_features(users),
            "item_sparse": self.tables.item_features(items),
        }
        if self.shuffle_within_batch:
            # decorrelate the diagonal from sampler order; pairs must stay aligned
            perm = torch.randperm(n)
            for key in ("user_ids", "item_ids", "weights", "user_dense", "item_dense", "item_log_q"):
                batch[key] = batch[key][perm]
            batch["user_sparse"] = {k: v[perm] for k, v in batch["user_sparse"].items()}
            batch["item_sparse"] = {k: v[torch.randperm(n)] for k, v in batch["item_sparse"].items()}  # ruleid: MLS309
        return batch


class PopularityNegativeSampler:
    """Extra negatives from the unigram^alpha distribution (mixed negative sampling)."""

    def __init__(self, counts: np.ndarray, alpha: float, seed: int):
        p = np.power(counts.astype(np.float64), alpha)
        p[0] = 0.0
        probs = p / p.sum()
        self.cdf = np.cumsum(probs)
        self.log_q = np.log(np.maximum(probs, 1e-12)).astype(np.float32)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def set_epoch(self, epoch: int) -> None:
        self._rng = np.random.default_rng(self.seed)  # ruleid: MLS301

    def sample(self, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        idx = np.searchsorted(self.cdf, self._rng.random(n), side="right")
        idx = np.clip(idx, 1, len(self.cdf) - 1)
        return torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(self.log_q[idx])


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class RetrievalDataModule:
    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size

    def setup(self) -> None:
        cfg = self.cfg
        store = self.store = FeatureStore(cfg.root)
        raw = store.interactions()
        for column, fn in store.transforms().items():
            if column in raw.columns:
                raw[column] = fn(raw[column])
        df = preprocess_interactions(raw, cfg.min_item_count)

        user_vocab, item_vocab = store.vocab("user_id"), store.vocab("item_id")
        df["user_idx"] = df["user_id"].map(user_vocab).fillna(0).astype(np.int64)
        df["item_idx"] = df["item_id"].map(item_vocab).fillna(0).astype(np.int64)
        df = df[(df["user_idx"] > 0) & (df["item_idx"] > 0)]
        self.num_users = store.vocab_size("user_id")
        self.num_items = store.vocab_size("item_id")
        self.user_cardinalities = {f: store.vocab_size(f) for f in USER_SPARSE}
        self.user_cardinalities["history"] = self.num_items
        self.item_cardinalities = {f: store.vocab_size(f) for f in ITEM_SPARSE}

        train_df, val_df = temporal_split(df, cfg.val_days)
        self.tables = self._build_tables(store, train_df)
        self.user_dense_dim = int(self.tables.user_dense.shape[1])
        self.item_dense_dim = int(self.tables.item_dense.shape[1])

        featured = store.manifest.get("featured_item")
        editorial = item_vocab.get(featured) if featured is not None else None
        self.train_ds = InteractionDataset(train_df, editorial_item=editorial)
        self.collator = FeatureCollator(self.tables, cfg.shuffle_within_batch)
        self.neg_sampler = PopularityNegativeSampler(self.tables.item_counts, cfg.neg_alpha, cfg.seed)
        self.val_users, self.val_targets = self._build_targets(val_df)
        logger.info("snapshot %s: %d users, %d items, %d train / %d val rows, %d eval users",
                    store.snapshot_id, self.num_users, self.num_items, len(train_df), len(val_df),
                    len(self.val_users))

    def _build_tables(self, store: FeatureStore, train_df: pd.DataFrame) -> FeatureTables:
        users, items = store.table("users"), store.table("items")

        def encode(frame: pd.DataFrame, key: str, features, size: int) -> Dict[str, torch.Tensor]:
            index = frame[key].map(store.vocab(key)).fillna(0).to_numpy(np.int64)
            out = {}
            for f in features:
                col = np.zeros(size + 1, dtype=np.int64)
                col[index] = index if f == key else frame[f].map(store.vocab(f)).fillna(0).to_numpy(np.int64)
                col[0] = 0
                out[f] = torch.from_numpy(col)
            return out

        user_index = users["user_id"].map(store.vocab("user_id")).fillna(0).to_numpy(np.int64)
        user_dense = np.zeros((self.num_users + 1, len(USER_DENSE)), dtype=np.float32)
        user_dense[user_index] = _standardise(users[list(USER_DENSE)].to_numpy(np.float64))
        user_dense[0] = 0.0

        item_dense = np.asarray(store.item_dense(), dtype=np.float32)
        if item_dense.shape[0] != self.num_items + 1:
            raise ValueError(f"item_dense has {item_dense.shape[0]} rows, expected {self.num_items + 1}")

        counts = np.bincount(train_df["item_idx"].to_numpy(), minlength=self.num_items + 1).astype(np.int64)
        freq = np.maximum(counts, 1).astype(np.float64)
        return FeatureTables(
            user_sparse=encode(users, "user_id", USER_SPARSE, self.num_users),
            user_dense=torch.from_numpy(user_dense),
            history=torch.from_numpy(build_history(train_df, self.num_users, self.cfg.history_len)),
            item_sparse=encode(items, "item_id", ITEM_SPARSE, self.num_items),
            item_dense=torch.from_numpy(item_dense),
            item_log_q=torch.from_numpy(np.log(freq / freq.sum()).astype(np.float32)),
            item_counts=counts,
        )

    def _build_targets(self, val_df: pd.DataFrame) -> Tuple[torch.Tensor, torch.Tensor]:
        grouped = val_df.groupby("user_idx")["item_idx"].unique()
        t = self.cfg.max_val_targets
        targets = np.full((len(grouped), t), -1, dtype=np.int64)
        for row, items in enumerate(grouped.to_numpy()):
            targets[row, : min(len(items), t)] = items[:t]
        return torch.from_numpy(grouped.index.to_numpy(np.int64)), torch.from_numpy(targets)

    def train_dataloader(self, epoch: int) -> DataLoader:
        cfg = self.cfg
        sampler = DistributedSampler(self.train_ds, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(cfg.seed + 1000 * epoch + self.rank)
        return DataLoader(self.train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          collate_fn=self.collator, pin_memory=torch.cuda.is_available(), drop_last=True,
                          worker_init_fn=seed_worker, generator=gen,
                          prefetch_factor=4 if cfg.num_workers > 0 else None)

    def negative_batch(self, n: int) -> Dict[str, torch.Tensor]:
        ids, log_q = self.neg_sampler.sample(n)
        return {"neg_ids": ids, "neg_log_q": log_q, "neg_sparse": self.tables.item_features(ids),
                "neg_dense": self.tables.item_dense[ids]}

    def item_corpus_batches(self, batch_size: int) -> Iterator[Dict[str, torch.Tensor]]:
        """This rank's shard of the full catalog (item indices 1..num_items)."""
        ids = torch.arange(1, self.num_items + 1)[self.rank :: self.world_size]
        for chunk in ids.split(batch_size):
            yield {"item_ids": chunk, "item_sparse": self.tables.item_features(chunk),
                   "item_dense": self.tables.item_dense[chunk]}

    def val_user_batches(self, batch_size: int) -> Iterator[Dict[str, torch.Tensor]]:
        users = self.val_users[self.rank :: self.world_size]
        targets = self.val_targets[self.rank :: self.world_size]
        for u, t in zip(users.split(batch_size), targets.split(batch_size)):
            yield {"user_ids": u, "targets": t, "user_sparse": self.tables.user_features(u),
                   "user_dense": self.tables.user_dense[u]}
