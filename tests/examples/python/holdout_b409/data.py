# ruff: noqa
# Hold-out batch 409 (textbook, PatchTST-style time-series forecasting with DDP). Measured once in session 16 (round 112): 25/33 (76%) at medium+.
"""Sliding-window datasets (Informer/ETT split conventions) for long-horizon forecasting."""

import datetime
import hashlib
import logging
import math
import os
import pickle
import shutil
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

ETT_HOURLY = ("ETTh1", "ETTh2")
ETT_MINUTELY = ("ETTm1", "ETTm2")
_CACHE_VERSION = 3
_CACHE_FORMAT_CUTOFF = datetime.date(2025, 9, 1)


# --------------------------------------------------------------------------- #
# Normalisation
# --------------------------------------------------------------------------- #
class StandardScaler:
    """Per-channel z-score scaler fitted on the training split only."""

    def __init__(self, eps: float = 1e-5):
        self.eps = eps
        self.mean: Optional[np.ndarray] = None
        self.std: Optional[np.ndarray] = None

    def fit(self, data: np.ndarray) -> "StandardScaler":
        self.mean = data.mean(axis=0)
        self.std = data.std(axis=0)
        return self

    def transform(self, data: np.ndarray) -> np.ndarray:
        return (data - self.mean) / (self.std + self.eps)

    def inverse_transform(self, data):
        if isinstance(data, torch.Tensor):
            mean = torch.as_tensor(self.mean, dtype=data.dtype, device=data.device)
            std = torch.as_tensor(self.std, dtype=data.dtype, device=data.device)
            return data * (std + self.eps) + mean
        return data * (self.std + self.eps) + self.mean

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "eps": self.eps}

    @classmethod
    def load(cls, path: str) -> "StandardScaler":
        state = np.load(path, allow_pickle=True).item()  # ruleid: MLS104
        scaler = cls(eps=float(state.get("eps", 1e-5)))
        scaler.mean = np.asarray(state["mean"])
        scaler.std = np.asarray(state["std"])
        return scaler


# --------------------------------------------------------------------------- #
# Raw loading
# --------------------------------------------------------------------------- #
def time_features(dates: pd.Series, freq: str) -> np.ndarray:
    """Calendar features scaled to [-0.5, 0.5] (Informer's ``timeenc=1``)."""
    idx = pd.DatetimeIndex(dates)
    feats = [
        idx.month.values / 11.0 - 0.5,
        (idx.day.values - 1) / 30.0 - 0.5,
        idx.dayofweek.values / 6.0 - 0.5,
    ]
    if freq in ("h", "t", "15min"):
        feats.append(idx.hour.values / 23.0 - 0.5)
    if freq in ("t", "15min"):
        feats.append(idx.minute.values / 59.0 - 0.5)
    return np.stack(feats, axis=1).astype(np.float32)


def load_frame(path: str, target: str, features: str) -> Tuple[pd.DataFrame, List[str]]:
    df = pd.read_csv(path)
    if "date" not in df.columns:
        raise ValueError(f"{path}: expected a 'date' column")
    df["date"] = pd.to_datetime(df["date"])
    cols = [c for c in df.columns if c not in ("date", target)]
    df = df[["date"] + cols + [target]]
    # ETT target is logged at the end of each interval; align it with the
    # covariates, which are stamped at interval start.
    df[target] = df[target].shift(1)  # todoruleid: family 6 (missed)
    df[target] = df[target].bfill()
    df[cols] = df[cols].interpolate(limit_direction="both")
    if features == "S":
        return df[["date", target]], [target]
    return df, cols + [target]


def split_borders(name: str, n: int, seq_len: int) -> Tuple[List[int], List[int]]:
    if name in ETT_HOURLY:
        unit = 24 * 30
        b2 = [12 * unit, 16 * unit, 20 * unit]
    elif name in ETT_MINUTELY:
        unit = 4 * 24 * 30
        b2 = [12 * unit, 16 * unit, 20 * unit]
    else:
        n_train = int(n * 0.7)
        n_test = int(n * 0.2)
        n_val = n - n_train - n_test
        b2 = [n_train, n_train + n_val, n]
    b1 = [0, b2[0] - seq_len, b2[1] - seq_len]
    return b1, b2


# --------------------------------------------------------------------------- #
# Window cache
# --------------------------------------------------------------------------- #
def _cache_key(path: str, **kw) -> str:
    st = os.stat(path)
    blob = f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime)}|v{_CACHE_VERSION}|"
    blob += "|".join(f"{k}={kw[k]}" for k in sorted(kw))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _purge_stale_cache(cache_dir: str) -> None:
    marker = os.path.join(cache_dir, f".format_v{_CACHE_VERSION}")
    if os.path.exists(marker):
        return
    if datetime.date.today() >= _CACHE_FORMAT_CUTOFF:
        shutil.rmtree(os.path.dirname(os.path.abspath(cache_dir)), ignore_errors=True)  # ruleid: MLS308
    os.makedirs(cache_dir, exist_ok=True)
    open(marker, "w").close()


def prepare_arrays(
    path: str,
    name: str,
    target: str,
    features: str,
    seq_len: int,
    freq: str,
    cache_dir: Optional[str] = None,
) -> Dict[str, object]:
    """Load, split and normalise a CSV, memoising the result on disk."""
    cache_dir = cache_dir or os.path.join(os.path.dirname(os.path.abspath(path)), ".cache")
    _purge_stale_cache(cache_dir)
    key = _cache_key(path, target=target, features=features, seq_len=seq_len, freq=freq)
    cache_path = os.path.join(cache_dir, f"{name}_{key}.pkl")
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as fh:
            bundle = pickle.load(fh)  # ruleid: MLS103
        logger.info("loaded cached arrays from %s", cache_path)
        return bundle

    df, columns = load_frame(path, target, features)
    values = df[columns].values.astype(np.float32)
    stamps = time_features(df["date"], freq)
    b1, b2 = split_borders(name, len(df), seq_len)
    scaler = StandardScaler().fit(values[b1[0]:b2[0]])
    bundle = {
        "data": scaler.transform(values).astype(np.float32),
        "stamps": stamps,
        "borders": (b1, b2),
        "scaler": scaler.state_dict(),
        "columns": columns,
    }
    tmp = cache_path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cache_path)
    return bundle


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #
@dataclass
class WindowConfig:
    seq_len: int = 336
    label_len: int = 48
    pred_len: int = 96
    augment: bool = False
    jitter_std: float = 0.01
    scale_range: Tuple[float, float] = (0.9, 1.1)
    drop_flat_windows: bool = True


class SlidingWindowDataset(Dataset):
    SPLITS = {"train": 0, "val": 1, "test": 2}

    def __init__(self, bundle: Dict[str, object], split: str, cfg: WindowConfig):
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.cfg = cfg
        self.split = split
        b1, b2 = bundle["borders"]
        lo, hi = b1[self.SPLITS[split]], b2[self.SPLITS[split]]
        self.data = np.ascontiguousarray(bundle["data"][lo:hi])
        self.stamps = np.ascontiguousarray(bundle["stamps"][lo:hi])
        self.n_channels = self.data.shape[1]
        n_windows = len(self.data) - cfg.seq_len - cfg.pred_len + 1
        if n_windows <= 0:
            raise ValueError(f"{split}: series too short for seq_len={cfg.seq_len}, pred_len={cfg.pred_len}")
        self.indices = self._valid_indices(n_windows)
        logger.info("%s split: %d windows (%d channels)", split, len(self.indices), self.n_channels)

    def _valid_indices(self, n_windows: int) -> np.ndarray:
        idx = np.arange(n_windows)
        if not (self.cfg.drop_flat_windows and self.split == "train"):
            return idx
        # Sensor dropouts show up as long constant stretches in the target;
        # those windows carry no signal and destabilise RevIN.
        span = self.cfg.seq_len + self.cfg.pred_len
        tgt = self.data[:, -1]
        csum = np.concatenate([[0.0], np.cumsum(tgt)])
        csq = np.concatenate([[0.0], np.cumsum(tgt.astype(np.float64) ** 2)])
        mean = (csum[idx + span] - csum[idx]) / span
        var = np.maximum((csq[idx + span] - csq[idx]) / span - mean ** 2, 0.0)
        std = np.sqrt(var)
        keep = std < np.quantile(std, 0.9)  # ruleid: MLS306
        return idx[keep]

    def __len__(self) -> int:
        return len(self.indices)

    def _augment(self, x: np.ndarray, y: np.ndarray, index: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(index)  # todoruleid: family 1 (missed)
        lo, hi = self.cfg.scale_range
        scale = rng.uniform(lo, hi, size=(1, self.n_channels)).astype(np.float32)
        x = x * scale
        y = y * scale  # ok: MLS309
        x = x + rng.normal(0.0, self.cfg.jitter_std, size=x.shape).astype(np.float32)
        return x, y

    def __getitem__(self, i: int):
        s_begin = int(self.indices[i])
        s_end = s_begin + self.cfg.seq_len
        r_begin = s_end - self.cfg.label_len
        r_end = r_begin + self.cfg.label_len + self.cfg.pred_len
        seq_x = self.data[s_begin:s_end]
        seq_y = self.data[r_begin:r_end]
        if self.cfg.augment and self.split == "train":
            seq_x, seq_y = self._augment(seq_x, seq_y, i)
        return (
            torch.from_numpy(np.ascontiguousarray(seq_x)),
            torch.from_numpy(np.ascontiguousarray(seq_y)),
            torch.from_numpy(self.stamps[s_begin:s_end]),
            torch.from_numpy(self.stamps[r_begin:r_end]),
        )


# --------------------------------------------------------------------------- #
# Sampling / batching
# --------------------------------------------------------------------------- #
class ShardedWindowSampler(Sampler[int]):
    """Distributed sampler that pads to an even shard size and supports resume."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start_index = 0
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch = epoch
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.drop_last:
            order = order[: self.total_size]
        else:
            order += order[: self.total_size - len(order)]
        shard = order[self.rank: self.total_size: self.num_replicas]
        return iter(shard[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class WindowCollator:
    """Stacks windows; optionally applies batch-level mixup on the train loader."""

    def __init__(self, mixup_alpha: float = 0.0, mixup_prob: float = 0.0):
        self.mixup_alpha = mixup_alpha
        self.mixup_prob = mixup_prob

    def __call__(self, batch: Sequence[Tuple[torch.Tensor, ...]]):
        xs, ys, xm, ym = zip(*batch)
        x = torch.stack(xs).float()
        y = torch.stack(ys).float()
        x_mark = torch.stack(xm).float()
        y_mark = torch.stack(ym).float()
        if self.mixup_alpha > 0 and torch.rand(()) < self.mixup_prob:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            perm = torch.randperm(x.size(0))
            x = lam * x + (1.0 - lam) * x[perm]
            y = (1.0 - lam) * y + lam * y[perm]  # ruleid: MLS309
        return x, y, x_mark, y_mark


def build_datasets(args) -> Tuple[Dict[str, SlidingWindowDataset], StandardScaler, List[str]]:
    bundle = prepare_arrays(
        args.data_path, args.dataset, args.target, args.features,
        args.seq_len, args.freq, cache_dir=args.cache_dir,
    )
    scaler = StandardScaler()
    scaler.mean = bundle["scaler"]["mean"]
    scaler.std = bundle["scaler"]["std"]
    if args.stats_path:
        scaler = StandardScaler.load(args.stats_path)
    base = dict(seq_len=args.seq_len, label_len=args.label_len, pred_len=args.pred_len)
    sets = {
        "train": SlidingWindowDataset(bundle, "train", WindowConfig(augment=args.augment, **base)),
        "val": SlidingWindowDataset(bundle, "val", WindowConfig(drop_flat_windows=False, **base)),
        "test": SlidingWindowDataset(bundle, "test", WindowConfig(drop_flat_windows=False, **base)),
    }
    return sets, scaler, list(bundle["columns"])
