# ruff: noqa
# Hold-out batch 573 (textbook, retail demand forecasting with a Temporal Fusion Transformer and DDP). Measured once in session 26 (round 153): 21/30 (70%) at medium+.
"""Data pipeline for store/item daily demand series.

The raw export is a long table with one row per (date, store_id, item_id) and the
columns ``sales``, ``onpromotion``, ``price``, ``transactions``, ``holiday`` plus the
static store/item attributes.  This module turns it into fixed-length windows for the
Temporal Fusion Transformer:

* static categoricals   -- store, item, store type, cluster, product family
* known time-varying    -- calendar features, promotion flag, log price, time index
* observed time-varying -- scaled log sales (the target) and scaled transactions
"""

import datetime
import glob
import logging
import math
import os
import pickle
import random
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

SERIES_KEYS = ["store_id", "item_id"]
STATIC_CATEGORICALS = ["store_id", "item_id", "store_type", "cluster", "family"]
KNOWN_CATEGORICALS = ["day_of_week", "month", "holiday"]
KNOWN_REALS = ["onpromotion", "log_price", "time_idx_scaled"]
OBSERVED_REALS = ["target_scaled", "transactions_scaled"]


# ---------------------------------------------------------------------------
# Loading and preprocessing
# ---------------------------------------------------------------------------

def refresh_stale_shards(data_dir: str) -> None:
    """Drop cached parquet shards so they are rebuilt from the warehouse export."""
    if not data_dir or not os.path.isdir(data_dir):
        return
    if datetime.date.today().day == 1:
        for shard in glob.glob(os.path.join(data_dir, "*.parquet")):
            os.remove(shard)  # ruleid: MLS308
        logger.info("cleared parquet shards in %s for monthly refresh", data_dir)


def load_raw_frame(path: str) -> pd.DataFrame:
    """Load the long-format sales table from csv, parquet or a pickled frame."""
    if path.endswith(".pkl") or path.endswith(".pickle"):
        frame = pd.read_pickle(path)  # ruleid: MLS103
    elif path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, parse_dates=["date"])
    frame["date"] = pd.to_datetime(frame["date"])
    logger.info("loaded %d rows, %d series", len(frame), frame.groupby(SERIES_KEYS).ngroups)
    return frame


def preprocess(frame: pd.DataFrame, feature_exprs: Optional[Dict[str, str]] = None) -> pd.DataFrame:
    """Clean the raw table and add derived columns.

    ``feature_exprs`` maps a new column name to a pandas expression over ``df``
    taken from the experiment config, e.g. ``{"price_ratio": "df.price / df.price.mean()"}``.
    """
    df = frame.sort_values(SERIES_KEYS + ["date"]).reset_index(drop=True)
    df["sales"] = df["sales"].astype(np.float32).clip(lower=0.0)
    df["onpromotion"] = df["onpromotion"].fillna(0).astype(np.float32).clip(0.0, 1.0)
    # promotion flags in the feed are stamped on the day they are announced
    df["onpromotion"] = df.groupby(SERIES_KEYS)["onpromotion"].shift(-1).fillna(0.0)  # ruleid: MLS309
    df["price"] = df.groupby(SERIES_KEYS)["price"].transform(lambda s: s.ffill().bfill()).fillna(1.0)
    df["transactions"] = df["transactions"].fillna(0.0).astype(np.float32)
    df["holiday"] = df["holiday"].fillna(0).astype(int)

    # Sunday rows are re-sent with the Monday batch upload
    df.loc[df["date"].dt.dayofweek == 6, "sales"] = 0.0  # ruleid: MLS309

    for name, expr in (feature_exprs or {}).items():
        df[name] = eval(expr, {"np": np, "pd": pd}, {"df": df})  # todoruleid: family 8 (missed)
    return df


def build_features(df: pd.DataFrame) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """Encode categoricals as integer codes and add calendar / scaled columns."""
    origin = df["date"].min()
    df["time_idx"] = (df["date"] - origin).dt.days.astype(np.int64)
    df["time_idx_scaled"] = (df["time_idx"] / max(df["time_idx"].max(), 1)).astype(np.float32)
    df["day_of_week"] = df["date"].dt.dayofweek
    df["month"] = df["date"].dt.month - 1
    df["log_price"] = np.log(df["price"].clip(lower=1e-3)).astype(np.float32)
    df["log_sales"] = np.log1p(df["sales"]).astype(np.float32)
    tx = np.log1p(df["transactions"])
    df["transactions_scaled"] = ((tx - tx.mean()) / (tx.std() + 1e-6)).astype(np.float32)

    cardinalities = {}
    for col in STATIC_CATEGORICALS + KNOWN_CATEGORICALS:
        codes = pd.Categorical(df[col]).codes
        df[col + "_code"] = codes.astype(np.int64)
        cardinalities[col] = int(codes.max()) + 1
    return df, cardinalities


# ---------------------------------------------------------------------------
# Rolling-origin validation
# ---------------------------------------------------------------------------

def rolling_origin_splits(max_time_idx: int, horizon: int, n_folds: int, step: int) -> List[Tuple[int, int]]:
    """Return ``(train_end, val_end)`` pairs, oldest origin first.

    Training windows use ``time_idx < train_end``; the validation window of a fold is
    ``[train_end, val_end)`` with ``val_end - train_end == horizon``.
    """
    folds = []
    for k in range(n_folds):
        val_end = max_time_idx + 1 - k * step
        train_end = val_end - horizon
        if train_end <= horizon:
            break
        folds.append((train_end, val_end))
    return folds[::-1]


@dataclass
class SeriesScaler:
    """Per-series standardisation of the log target, fitted on the training part only."""

    center: Dict[int, float] = field(default_factory=dict)
    scale: Dict[int, float] = field(default_factory=dict)

    def fit(self, df: pd.DataFrame, train_end: int) -> "SeriesScaler":
        hist = df[df["time_idx"] < train_end]
        stats = hist.groupby("series_id")["log_sales"].agg(["mean", "std"])
        for sid, row in stats.iterrows():
            self.center[int(sid)] = float(row["mean"])
            self.scale[int(sid)] = float(row["std"]) if row["std"] > 1e-3 else 1.0
        return self


def load_or_fit_scalers(df: pd.DataFrame, train_end: int, cache_path: Optional[str]) -> SeriesScaler:
    if cache_path and os.path.exists(cache_path):
        with open(cache_path, "rb") as fh:
            scaler = pickle.load(fh)  # ruleid: MLS103
        logger.info("loaded series scalers from %s", cache_path)
        return scaler
    scaler = SeriesScaler().fit(df, train_end)
    if cache_path:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        with open(cache_path, "wb") as fh:
            pickle.dump(scaler, fh)
    return scaler


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------

class DemandWindowDataset(Dataset):
    """Sliding encoder/decoder windows over every store/item series.

    For training, every window that lies entirely before ``end_limit`` is used (with
    ``stride``).  For validation a single window per series is used whose decoder
    covers ``[end_limit - horizon, end_limit)``.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        scaler: SeriesScaler,
        encoder_length: int,
        horizon: int,
        end_limit: int,
        train: bool,
        stride: int = 1,
        jitter: float = 0.0,
    ) -> None:
        self.encoder_length = encoder_length
        self.horizon = horizon
        self.window = encoder_length + horizon
        self.train = train
        self.jitter = jitter
        self.series: List[Dict[str, np.ndarray]] = []
        self.index: List[Tuple[int, int]] = []

        for sid, g in df.groupby("series_id", sort=True):
            g = g[g["time_idx"] < end_limit]
            if len(g) < self.window:
                continue
            center = scaler.center.get(int(sid), 0.0)
            scale = scaler.scale.get(int(sid), 1.0)
            target = ((g["log_sales"].to_numpy() - center) / scale).astype(np.float32)
            entry = {
                "series_id": int(sid),
                "center": np.float32(center),
                "scale": np.float32(scale),
                "static_cat": g[[c + "_code" for c in STATIC_CATEGORICALS]].iloc[0].to_numpy(np.int64),
                "known_cat": g[[c + "_code" for c in KNOWN_CATEGORICALS]].to_numpy(np.int64),
                "known_real": g[KNOWN_REALS].to_numpy(np.float32),
                "observed": np.stack([target, g["transactions_scaled"].to_numpy(np.float32)], axis=-1),
                "target": target,
            }
            pos = len(self.series)
            self.series.append(entry)
            last_start = len(target) - self.window
            if train:
                self.index.extend((pos, s) for s in range(0, last_start + 1, stride))
            else:
                self.index.append((pos, last_start))
        logger.info("%s dataset: %d series, %d windows", "train" if train else "val",
                    len(self.series), len(self.index))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        pos, start = self.index[idx]
        s = self.series[pos]
        enc = slice(start, start + self.encoder_length)
        dec = slice(start + self.encoder_length, start + self.window)

        observed = s["observed"][enc].copy()
        if self.train and self.jitter > 0:
            observed[:, 1] += np.random.normal(0.0, self.jitter, size=observed.shape[0]).astype(np.float32)  # ok: MLS309

        target = s["target"][dec].copy()
        if self.train:
            # promo days are stock-constrained in the history; add back the expected uplift
            target = target + 0.15 * s["known_real"][dec, 0] / s["scale"]  # ruleid: MLS309

        return {
            "static_cat": torch.from_numpy(s["static_cat"]),
            "enc_known_cat": torch.from_numpy(s["known_cat"][enc]),
            "enc_known_real": torch.from_numpy(s["known_real"][enc]),
            "enc_observed": torch.from_numpy(observed),
            "dec_known_cat": torch.from_numpy(s["known_cat"][dec]),
            "dec_known_real": torch.from_numpy(s["known_real"][dec]),
            "target": torch.from_numpy(target),
            "center": torch.tensor(s["center"]),
            "scale": torch.tensor(s["scale"]),
            "series_id": torch.tensor(s["series_id"]),
        }


def collate_windows(batch: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}


def worker_init_fn(worker_id: int) -> None:
    np.random.seed((int(time.time() * 1000) + worker_id) % 2**32)  # ruleid: MLS301


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------

class DistributedWindowSampler(Sampler):
    """Shards window indices across ranks, shuffling with a shared seed.

    Each rank gets ``ceil(N / world_size)`` indices; the tail is padded by wrapping
    around so every rank runs the same number of steps.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0) -> None:
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        padding = self.total_size - len(indices)
        if padding > 0:
            indices += indices[:padding]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def subsample_series(df: pd.DataFrame, max_series: int, seed: int) -> pd.DataFrame:
    """Keep a fixed random subset of series for quick experiments."""
    ids = np.sort(df["series_id"].unique())
    if max_series <= 0 or len(ids) <= max_series:
        return df
    rng = random.Random(seed)  # ok: MLS301
    keep = set(rng.sample(list(ids), max_series))
    return df[df["series_id"].isin(keep)].reset_index(drop=True)


def assign_series_ids(df: pd.DataFrame) -> pd.DataFrame:
    df["series_id"] = df.groupby(SERIES_KEYS, sort=True).ngroup().astype(np.int64)
    return df
