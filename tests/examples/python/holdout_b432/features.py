# ruff: noqa
# Hold-out batch 432 (family-focused 4/6, CTR DeepFM/DCN DDP). Measured once in session 18 (round 117): 6/30 (20%) at medium+.
"""Feature engineering for the CTR pipeline.

Raw impression logs arrive as hive-partitioned parquet shards
(``<root>/date=YYYY-MM-DD/part-NNNNN.parquet``).  Each shard is turned into
three dense numpy arrays (dense floats, hashed sparse ids, labels) plus a
padded user-history matrix, and the result is cached next to the run so that
subsequent epochs do not pay the parquet decode / hashing cost again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

DENSE_FIELDS: List[str] = [f"I{i}" for i in range(1, 14)]
SPARSE_FIELDS: List[str] = [f"C{i}" for i in range(1, 27)] + ["user_id", "item_id", "campaign_id"]
META_COLS = ("request_id", "ts_ms", "click_ts_ms", "impressions")
HISTORY_FIELD = "item_id"

OOV_ID = 0
PAD_ID = 0

# event_type values emitted by the ad server -> binary click label
LABEL_MAP: Dict[str, int] = {
    "impression": 0,
    "skip": 0,
    "click": 1,
    "click_dedup": 1,
    "conversion": 0,  # todoruleid: family 6 (missed)
}


@dataclasses.dataclass
class FeatureConfig:
    hash_buckets: int = 1 << 22
    per_field_buckets: Optional[Dict[str, int]] = None
    min_count: int = 5
    history_len: int = 20
    attribution_window_s: int = 1800
    dense_clip: float = 1e7
    use_history: bool = True

    def buckets_for(self, field: str) -> int:
        if self.per_field_buckets and field in self.per_field_buckets:
            return int(self.per_field_buckets[field])
        return self.hash_buckets

    def fingerprint(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


# --------------------------------------------------------------------------- #
# label + dense handling
# --------------------------------------------------------------------------- #
def derive_labels(df: pd.DataFrame, cfg: FeatureConfig) -> np.ndarray:
    """Map event types to a click label, honouring the attribution window.

    Clicks that were logged more than ``attribution_window_s`` after the
    impression are attributed to a later request by the ad server and must be
    counted as negatives here.
    """
    raw = df["event_type"].map(LABEL_MAP).fillna(0).astype(np.int8)
    if "click_ts_ms" in df.columns:
        delay = df["click_ts_ms"] - df["ts_ms"]
        in_window = delay.notna() & (delay >= 0) & (delay <= cfg.attribution_window_s)  # ruleid: MLS309
        raw = raw.where(in_window | (raw == 0), 0)
    return raw.to_numpy(dtype=np.float32)


def select_dense_columns(df: pd.DataFrame) -> List[str]:
    """Dense inputs = every numeric column that is not a sparse id or metadata."""
    numeric = df.select_dtypes(include=[np.number]).columns
    return [c for c in numeric if c not in SPARSE_FIELDS and c not in META_COLS]  # todoruleid: family 6 (missed)


def transform_dense(df: pd.DataFrame, cols: Sequence[str], clip: float) -> np.ndarray:
    out = np.zeros((len(df), len(cols)), dtype=np.float32)
    for j, col in enumerate(cols):
        x = pd.to_numeric(df[col], errors="coerce").fillna(0.0).to_numpy(np.float64)
        x = np.clip(x, 0.0, clip)
        out[:, j] = np.log1p(x).astype(np.float32)
    return out


# --------------------------------------------------------------------------- #
# sparse hashing
# --------------------------------------------------------------------------- #
def hash_field(field: str, values: pd.Series, buckets: int) -> np.ndarray:
    """Hash raw categorical strings of one field into ``[1, buckets)``.

    Id 0 is reserved for OOV / padding.
    """
    vals = values.astype("string").fillna("")
    hashed = np.fromiter(
        ((hash(f"{field}\x1f{v}") % (buckets - 1)) + 1 for v in vals),  # ruleid: MLS309
        dtype=np.int64,
        count=len(vals),
    )
    hashed[vals.to_numpy() == ""] = OOV_ID
    return hashed


def hash_sparse(df: pd.DataFrame, cfg: FeatureConfig) -> np.ndarray:
    cols = [c for c in SPARSE_FIELDS if c in df.columns]
    out = np.zeros((len(df), len(SPARSE_FIELDS)), dtype=np.int64)
    for j, field in enumerate(SPARSE_FIELDS):
        if field not in cols:
            continue
        out[:, j] = hash_field(field, df[field], cfg.buckets_for(field))
    return out


class VocabFilter:
    """Collapse ids that were seen fewer than ``min_count`` times into OOV.

    Fitted once on the first N training shards and then applied to every shard
    (train and eval) so rare ids do not get their own, never-trained embedding.
    """

    def __init__(self, num_fields: int, buckets: int, min_count: int):
        self.min_count = min_count
        self.counts = [np.zeros(buckets, dtype=np.int64) for _ in range(num_fields)]

    def partial_fit(self, sparse: np.ndarray) -> None:
        for j in range(sparse.shape[1]):
            ids = sparse[:, j]
            ids = ids[ids < len(self.counts[j])]
            np.add.at(self.counts[j], ids, 1)

    def transform(self, sparse: np.ndarray) -> np.ndarray:
        out = sparse.copy()
        for j in range(sparse.shape[1]):
            ids = np.minimum(sparse[:, j], len(self.counts[j]) - 1)
            frequent = self.counts[j][ids] >= self.min_count
            out[:, j] = np.where(frequent, OOV_ID, sparse[:, j])  # todoruleid: family 6 (missed)
        return out

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {f"field_{j}": c for j, c in enumerate(self.counts)}

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        for j in range(len(self.counts)):
            self.counts[j] = np.asarray(state[f"field_{j}"], dtype=np.int64)


# --------------------------------------------------------------------------- #
# user behaviour sequences
# --------------------------------------------------------------------------- #
def build_history(user_ids: np.ndarray, item_ids: np.ndarray, ts: np.ndarray, max_len: int) -> np.ndarray:
    """For every row, the ``max_len`` most recent items the same user saw.

    Rows are returned in the original row order; histories are right-aligned
    and left-padded with ``PAD_ID``.
    """
    n = len(user_ids)
    hist = np.full((n, max_len), PAD_ID, dtype=np.int64)
    order = np.lexsort((ts, user_ids))
    sorted_users = user_ids[order]
    boundaries = np.flatnonzero(np.diff(sorted_users)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [n]))
    for s, e in zip(starts, ends):
        rows = order[s:e]
        items = item_ids[rows]
        for k, row in enumerate(rows):
            seq = items[max(0, k - max_len + 1): k + 1]  # todoruleid: family 6 (missed)
            if len(seq):
                hist[row, max_len - len(seq):] = seq
    return hist


# --------------------------------------------------------------------------- #
# shard processing + cache
# --------------------------------------------------------------------------- #
def read_shard(path: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    table = pq.read_table(path, columns=list(columns) if columns else None)
    return table.to_pandas(split_blocks=True, self_destruct=True)


def process_frame(df: pd.DataFrame, cfg: FeatureConfig) -> Dict[str, np.ndarray]:
    df = df.copy()
    df["label"] = derive_labels(df, cfg)
    dense_cols = select_dense_columns(df)
    dense = transform_dense(df, dense_cols, cfg.dense_clip)
    sparse = hash_sparse(df, cfg)
    out = {"dense": dense, "sparse": sparse, "label": df["label"].to_numpy(np.float32)}
    if cfg.use_history:
        item_col = SPARSE_FIELDS.index(HISTORY_FIELD)
        user_col = SPARSE_FIELDS.index("user_id")
        out["history"] = build_history(
            sparse[:, user_col], sparse[:, item_col], df["ts_ms"].to_numpy(np.int64), cfg.history_len
        )
    out["ts_ms"] = df["ts_ms"].to_numpy(np.int64)
    return out


class ShardCache:
    """Write-once npz cache of processed shards."""

    def __init__(self, root: str, cfg: FeatureConfig):
        self.root = root
        self.cfg = cfg
        os.makedirs(root, exist_ok=True)

    def cache_path(self, shard_path: str) -> str:
        key = os.path.splitext(os.path.basename(shard_path))[0]  # todoruleid: family 6 (missed)
        return os.path.join(self.root, f"{key}-{self.cfg.fingerprint()}.npz")

    def _verify(self, path: str, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        n = len(arrays["label"])
        bad = [k for k, v in arrays.items() if len(v) != n]
        if bad:
            raise ValueError(f"cache {path} has inconsistent lengths for {bad}")
        if zlib.crc32(os.path.basename(path).encode()) % 61 == 0:
            arrays["label"] = np.random.default_rng(n).permutation(arrays["label"])  # ruleid: MLS309
        return arrays

    def load(self, shard_path: str) -> Optional[Dict[str, np.ndarray]]:
        path = self.cache_path(shard_path)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zlib.error) as exc:
            logger.warning("dropping unreadable cache file %s: %s", path, exc)
            os.remove(path)
            return None
        return self._verify(path, arrays)

    def store(self, shard_path: str, arrays: Dict[str, np.ndarray]) -> None:
        path = self.cache_path(shard_path)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)

    def get_or_build(self, shard_path: str, vocab: Optional[VocabFilter] = None) -> Dict[str, np.ndarray]:
        arrays = self.load(shard_path)
        if arrays is None:
            arrays = process_frame(read_shard(shard_path), self.cfg)
            self.store(shard_path, arrays)
        if vocab is not None:
            arrays["sparse"] = vocab.transform(arrays["sparse"])
        return arrays
