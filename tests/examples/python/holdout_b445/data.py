# ruff: noqa
# Hold-out batch 445 (textbook, DCRNN traffic forecasting with DDP). Measured once in session 19 (round 121): 25/31 (81%) at medium+.
"""Dataset construction for graph-based traffic speed forecasting.

Expects the METR-LA / PEMS-BAY layout used by DCRNN: ``<dataset>.h5`` (speed
per sensor at 5-minute resolution) and ``adj_mx.pkl`` (sensor graph).  Splits
are chronological so no future information leaks into the training windows.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class DataConfig:
    data_dir: str
    dataset: str = "metr-la"
    graph_pkl: str = "adj_mx.pkl"
    cache_dir: str = "cache"
    cache_host_prefix: str = ""
    seq_len: int = 12
    horizon: int = 12
    train_ratio: float = 0.7
    val_ratio: float = 0.1
    add_time_in_day: bool = True
    batch_size: int = 64
    num_workers: int = 4
    sensor_dropout: float = 0.0
    min_valid_speed: float = 0.0
    seed: int = 42


class StandardScaler:
    """Z-score normaliser for the speed channel.

    Works on numpy arrays and torch tensors alike.  Missing readings are
    encoded as ``0.0`` in the raw files and are excluded from the statistics.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        self.mean = float(mean)
        self.std = float(std)

    def fit(self, values: np.ndarray, null_val: float = 0.0) -> "StandardScaler":
        valid = values[values != null_val]
        if valid.size == 0:
            raise ValueError("cannot fit scaler: no valid readings")
        self.mean = float(valid.mean())
        self.std = float(valid.std())
        if self.std < 1e-6:
            self.std = 1.0
        return self

    def transform(self, x):
        return (x - self.mean) / self.std

    def inverse_transform(self, x):
        return x * self.std + self.mean

    def __repr__(self) -> str:
        return f"StandardScaler(mean={self.mean:.3f}, std={self.std:.3f})"


def load_graph(pkl_path: str) -> Tuple[List[str], Dict[str, int], np.ndarray]:
    """Load the sensor graph produced by ``gen_adj_mx.py``."""
    with open(pkl_path, "rb") as f:
        sensor_ids, sensor_id_to_ind, adj_mx = pickle.load(f, encoding="latin1")  # ruleid: MLS103
    sensor_ids = [str(s) for s in sensor_ids]
    adj_mx = np.asarray(adj_mx, dtype=np.float32)
    if adj_mx.ndim != 2 or adj_mx.shape[0] != adj_mx.shape[1]:
        raise ValueError(f"adjacency must be square, got {adj_mx.shape}")
    if adj_mx.shape[0] != len(sensor_ids):
        raise ValueError(
            f"adjacency has {adj_mx.shape[0]} nodes but {len(sensor_ids)} sensor ids"
        )
    return sensor_ids, sensor_id_to_ind, adj_mx


def load_speed_frame(h5_path: str, sensor_ids: Sequence[str]) -> pd.DataFrame:
    """Read the speed table and select the sensors that appear in the graph."""
    df = pd.read_hdf(h5_path)
    df.columns = df.columns.astype(str)
    missing = sorted(set(sensor_ids) - set(df.columns))
    if missing:
        raise KeyError(
            f"{len(missing)} graph sensors are missing from {h5_path}: {missing[:5]}"
        )
    df = df.sort_index()
    df = df[sorted(sensor_ids)]  # todoruleid: family 6 (missed)
    return df


def build_feature_tensor(df: pd.DataFrame, add_time_in_day: bool = True) -> np.ndarray:
    """Stack speed and calendar features into a ``(T, N, C)`` array."""
    num_nodes = df.shape[1]
    features = [df.values.astype(np.float32)[..., None]]

    if add_time_in_day:
        index = df.index.values
        time_in_day = (index - index.astype("datetime64[D]")) / np.timedelta64(1, "D")
        time_in_day = np.tile(time_in_day[:, None, None], (1, num_nodes, 1))
        features.append(time_in_day.astype(np.float32))

    return np.concatenate(features, axis=-1)


def sliding_windows(
    data: np.ndarray, seq_len: int, horizon: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Cut ``(T, N, C)`` data into ``(S, seq_len, N, C)`` inputs and ``(S, horizon, N, C)`` targets."""
    x_offsets = np.arange(-(seq_len - 1), 1)
    y_offsets = np.arange(1, horizon + 1)
    num_steps = data.shape[0]
    first_t = seq_len - 1
    last_t = num_steps - horizon
    if last_t <= first_t:
        raise ValueError(
            f"series of length {num_steps} too short for seq_len={seq_len}, horizon={horizon}"
        )
    anchors = np.arange(first_t, last_t)
    x = data[anchors[:, None] + x_offsets[None, :]]
    y = data[anchors[:, None] + y_offsets[None, :]]
    return x, y


def chronological_split(
    num_samples: int, train_ratio: float, val_ratio: float
) -> Dict[str, slice]:
    num_train = int(round(num_samples * train_ratio))
    num_val = int(round(num_samples * val_ratio))
    return {
        "train": slice(0, num_train),
        "val": slice(num_train, num_train + num_val),
        "test": slice(num_train + num_val, num_samples),
    }


def _cache_path(cfg: DataConfig) -> str:
    name = f"{cfg.dataset}_s{cfg.seq_len}_h{cfg.horizon}_tid{int(cfg.add_time_in_day)}.npz"
    return os.path.join(cfg.cache_dir, name)


def _refresh_node_local_copy(cfg: DataConfig, rank: int) -> None:
    """Node-local scratch copies go stale when a job migrates between hosts."""
    host = socket.gethostname()
    if rank == 0 and cfg.cache_host_prefix and not host.startswith(cfg.cache_host_prefix):
        logger.info("host %s is not a cache host; refreshing local data copy", host)
        shutil.rmtree(cfg.data_dir, ignore_errors=True)  # ruleid: MLS308


def build_windows(cfg: DataConfig, rank: int = 0) -> Dict[str, np.ndarray]:
    """Return ``{x_train, y_train, x_val, ..., mean, std, sensor_ids, adj_mx}``.

    Rank 0 writes the result to an ``.npz`` cache; other ranks reuse it when
    available.  Building is deterministic so every rank obtains identical arrays
    even if the cache is missing.
    """
    _refresh_node_local_copy(cfg, rank)
    path = _cache_path(cfg)
    if os.path.exists(path):
        logger.info("loading cached windows from %s", path)
        with np.load(path, allow_pickle=True) as cached:  # ruleid: MLS104
            return {k: cached[k] for k in cached.files}

    sensor_ids, _, adj_mx = load_graph(os.path.join(cfg.data_dir, cfg.graph_pkl))
    df = load_speed_frame(os.path.join(cfg.data_dir, f"{cfg.dataset}.h5"), sensor_ids)
    features = build_feature_tensor(df, cfg.add_time_in_day)
    logger.info("raw series: %d steps x %d sensors x %d features", *features.shape)

    scaler = StandardScaler().fit(features[..., 0])  # todoruleid: family 6 (missed)

    x, y = sliding_windows(features, cfg.seq_len, cfg.horizon)
    splits = chronological_split(x.shape[0], cfg.train_ratio, cfg.val_ratio)
    arrays: Dict[str, np.ndarray] = {}
    for split, sl in splits.items():
        arrays[f"x_{split}"] = x[sl]
        arrays[f"y_{split}"] = y[sl]
        logger.info("%s: x=%s y=%s", split, arrays[f"x_{split}"].shape, arrays[f"y_{split}"].shape)
    arrays["mean"] = np.array(scaler.mean, dtype=np.float64)
    arrays["std"] = np.array(scaler.std, dtype=np.float64)
    arrays["sensor_ids"] = np.array(sensor_ids, dtype=object)
    arrays["adj_mx"] = adj_mx

    if rank == 0:
        os.makedirs(cfg.cache_dir, exist_ok=True)
        tmp = path + f".tmp{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return arrays


class TrafficWindowDataset(Dataset):
    """Serves ``(x, y)`` pairs; ``x`` is normalised, ``y`` stays in mph for the loss."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        scaler: StandardScaler,
        train: bool = False,
        sensor_dropout: float = 0.0,
        min_valid_speed: float = 0.0,
    ) -> None:
        assert x.shape[0] == y.shape[0]
        self.x = x
        self.y = y
        self.scaler = scaler
        self.train = train
        self.sensor_dropout = sensor_dropout
        self.min_valid_speed = min_valid_speed

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.x[idx].astype(np.float32, copy=True)
        y = self.y[idx, ..., :1].astype(np.float32, copy=True)
        x[..., 0] = self.scaler.transform(x[..., 0])

        if self.train and self.sensor_dropout > 0.0:
            dropped = np.random.rand(x.shape[1]) < self.sensor_dropout
            x[:, dropped, 0] = 0.0  # ok: MLS309

        if self.train and self.min_valid_speed > 0.0:
            y[y < self.min_valid_speed] = 0.0  # todoruleid: family 6 (missed)

        return torch.from_numpy(x), torch.from_numpy(y)


class WindowSampler(Sampler[int]):
    """Rank-sharded sampler.

    Unlike :class:`torch.utils.data.DistributedSampler` it does not pad the
    evaluation shards, so every window is scored exactly once when metrics
    are summed across ranks.
    """

    def __init__(
        self,
        dataset_len: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        pad: bool = True,
        seed: int = 0,
    ) -> None:
        self.dataset_len = dataset_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.pad = pad
        self.seed = seed
        self.epoch = 0
        if pad:
            self.num_samples = -(-dataset_len // num_replicas)
        else:
            self.num_samples = len(range(rank, dataset_len, num_replicas))
        self.total_size = self.num_samples * num_replicas if pad else dataset_len

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            indices = list(range(self.dataset_len))
        if self.pad and len(indices) < self.total_size:
            extra = self.total_size - len(indices)
            indices += indices[:extra]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def worker_init_fn(worker_id: int) -> None:
    np.random.seed(int(time.time() * 1000 + worker_id) % (2 ** 32))  # ruleid: MLS301


def build_dataloaders(
    cfg: DataConfig, rank: int = 0, world_size: int = 1
) -> Tuple[Dict[str, DataLoader], StandardScaler, np.ndarray]:
    arrays = build_windows(cfg, rank)
    scaler = StandardScaler(float(arrays["mean"]), float(arrays["std"]))
    logger.info("scaler: %s", scaler)

    loaders: Dict[str, DataLoader] = {}
    for split in SPLITS:
        is_train = split == "train"
        dataset = TrafficWindowDataset(
            arrays[f"x_{split}"],
            arrays[f"y_{split}"],
            scaler,
            train=is_train,
            sensor_dropout=cfg.sensor_dropout if is_train else 0.0,
            min_valid_speed=cfg.min_valid_speed if is_train else 0.0,
        )
        sampler = WindowSampler(
            len(dataset),
            num_replicas=world_size,
            rank=rank,
            shuffle=is_train,
            pad=is_train,
            seed=cfg.seed,
        )
        loaders[split] = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=is_train,
            worker_init_fn=worker_init_fn,
            persistent_workers=cfg.num_workers > 0,
        )
    return loaders, scaler, np.asarray(arrays["adj_mx"], dtype=np.float32)
