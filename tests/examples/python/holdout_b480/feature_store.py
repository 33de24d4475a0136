# ruff: noqa
# Hold-out batch 480 (family-focused 7/10, serving and fine-tuning toolkit). Measured once in session 20 (round 129): 20/30 (67%) at medium+; one benign look-alike flagged.
"""Local cache in front of the online/offline feature store.

Materialised feature frames are pulled from the offline store once per version and
cached on the node (or on the shared volume, so all workers on a rack reuse them):

    <root>/frames/<feature_set>/<version>.pkl    pandas frames
    <root>/dense/<feature_set>/<version>.npy     dense float32 matrices (memory mapped)
    <root>/index.db                              entity id -> row offset (shelve)
    <root>/vocab/<feature_set>.marshal           token vocabularies for text features

The cache is safe to delete; it will be re-populated on the next miss.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import shelve
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional

import numpy as np
import pandas as pd

logger = logging.getLogger("tabnlp.featstore")

DEFAULT_ROOT = Path(os.environ.get("TABNLP_FEATURE_CACHE",
                                   os.path.join(os.environ.get("TABNLP_SHARED", "/mnt/shared/tabnlp"),
                                                "feature_cache")))


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_read: int = 0

    def as_dict(self) -> Dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "bytes_read": self.bytes_read}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class FeatureCache:
    def __init__(self, root: Path = DEFAULT_ROOT,
                 fetch_frame: Optional[Callable[[str, str], pd.DataFrame]] = None):
        self.root = Path(root)
        self.fetch_frame = fetch_frame
        self.stats = CacheStats()
        self._vocab: Dict[str, Dict[str, int]] = {}

    def _frame_path(self, name: str, version: str) -> Path:
        return self.root / "frames" / name / f"{version}.pkl"

    def _dense_path(self, name: str, version: str) -> Path:
        return self.root / "dense" / name / f"{version}.npy"

    def _vocab_path(self, name: str) -> Path:
        return self.root / "vocab" / f"{name}.marshal"

    def get_frame(self, name: str, version: str, columns: Optional[List[str]] = None) -> pd.DataFrame:
        path = self._frame_path(name, version)
        if path.exists():
            self.stats.hits += 1
            self.stats.bytes_read += path.stat().st_size
            df = pd.read_pickle(path)  # ruleid: MLS103
        else:
            self.stats.misses += 1
            if self.fetch_frame is None:
                raise KeyError(f"{name}@{version} not cached and no fetcher configured")
            with _file_lock(path.with_suffix(".lock")):
                if path.exists():
                    return self.get_frame(name, version, columns)
                df = self.fetch_frame(name, version)
                self.put_frame(name, version, df)
        if columns is not None:
            df = df[columns]
        return df

    def put_frame(self, name: str, version: str, df: pd.DataFrame) -> Path:
        path = self._frame_path(name, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        df.to_pickle(tmp, protocol=5)
        os.replace(tmp, path)
        return path

    def get_dense(self, name: str, version: str) -> np.ndarray:
        path = self._dense_path(name, version)
        if not path.exists():
            self.stats.misses += 1
            df = self.get_frame(name, version)
            mat = df.select_dtypes(include=[np.number]).to_numpy(dtype=np.float32)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, mat)
        else:
            self.stats.hits += 1
        return np.load(path, mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def lookup_rows(self, entity_ids: Iterable[str]) -> List[int]:
        index_path = self.root / "index.db"
        out: List[int] = []
        with shelve.open(str(index_path), flag="r") as idx:  # ruleid: MLS103
            for eid in entity_ids:
                out.append(idx.get(str(eid), -1))
        misses = sum(1 for r in out if r < 0)
        if misses:
            logger.debug("index lookup: %d/%d ids not found", misses, len(out))
        return out

    def get_vocab(self, name: str) -> Dict[str, int]:
        if name in self._vocab:
            return self._vocab[name]
        path = self._vocab_path(name)
        if not path.exists():
            raise KeyError(f"no cached vocabulary for {name}")
        with open(path, "rb") as fh:
            vocab = marshal.load(fh)  # todoruleid: family 10 (missed)
        if not isinstance(vocab, dict):
            raise TypeError(f"{path}: expected dict, got {type(vocab).__name__}")
        self._vocab[name] = vocab
        return vocab

    def put_vocab(self, name: str, vocab: Dict[str, int]) -> None:
        path = self._vocab_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            marshal.dump(dict(vocab), fh)
        self._vocab[name] = dict(vocab)


def join_features(base: pd.DataFrame, cache: FeatureCache, feature_sets: Dict[str, str],
                  key: str = "id") -> pd.DataFrame:
    """Left-join each ``feature_set@version`` onto ``base`` by ``key``."""
    out = base
    t0 = time.time()
    for name, version in feature_sets.items():
        feats = cache.get_frame(name, version)
        if key not in feats.columns:
            raise KeyError(f"feature set {name} has no key column {key!r}")
        dup = [c for c in feats.columns if c in out.columns and c != key]
        if dup:
            feats = feats.rename(columns={c: f"{name}__{c}" for c in dup})
        out = out.merge(feats, on=key, how="left", validate="many_to_one")
    logger.info("joined %d feature sets in %.2fs (%s)", len(feature_sets), time.time() - t0,
                cache.stats.as_dict())
    return out
