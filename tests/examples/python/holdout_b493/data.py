# ruff: noqa
# Hold-out batch 493 (textbook, PatchTST long-horizon forecasting with DDP). Measured once in session 22 (round 133): 23/31 (74%) at medium+.
"""Sliding-window datasets for long-horizon forecasting (ETT, electricity, weather)."""
import logging
import os
import pickle
import random
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from utils import barrier, get_rank, get_world_size, is_main_process

logger = logging.getLogger("tsf.data")

DATASET_SPECS = {
    "ETTh1": {"freq": "h", "borders": "ett_hour"},
    "ETTh2": {"freq": "h", "borders": "ett_hour"},
    "ETTm1": {"freq": "15min", "borders": "ett_minute"},
    "ETTm2": {"freq": "15min", "borders": "ett_minute"},
    "electricity": {"freq": "h", "borders": "ratio"},
    "weather": {"freq": "10min", "borders": "ratio"},
    "traffic": {"freq": "h", "borders": "ratio"},
}

SPLITS = {"train": 0, "val": 1, "test": 2}


class StandardScaler:
    """Per-channel z-score normalisation fitted on the training split only."""

    def __init__(self, eps: float = 1e-5):
        self.eps = eps
        self.mean: Optional[np.ndarray] = None
        self.std: Optional[np.ndarray] = None

    def fit(self, values: np.ndarray) -> "StandardScaler":
        self.mean = values.mean(axis=0)
        self.std = values.std(axis=0)
        self.std[self.std < self.eps] = 1.0
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse_transform(self, values):
        mean, std = self.mean, self.std
        if torch.is_tensor(values):
            mean = torch.as_tensor(mean, dtype=values.dtype, device=values.device)
            std = torch.as_tensor(std, dtype=values.dtype, device=values.device)
        return values * std + mean

    def state_dict(self) -> Dict[str, List[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def split_borders(name: str, n_rows: int, seq_len: int) -> Tuple[List[int], List[int]]:
    kind = DATASET_SPECS.get(name, {"borders": "ratio"})["borders"]
    if kind in ("ett_hour", "ett_minute"):
        mult = 4 if kind == "ett_minute" else 1
        month = 30 * 24 * mult
        border1s = [0, 12 * month - seq_len, 16 * month - seq_len]
        border2s = [12 * month, 16 * month, 20 * month]
    else:
        n_train = int(n_rows * 0.7)
        n_test = int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
        border1s = [0, n_train - seq_len, n_rows - n_test - seq_len]
        border2s = [n_train, n_train + n_val, n_rows]
    return border1s, border2s


def time_features(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    feats = [
        dates.hour / 23.0 - 0.5,
        dates.dayofweek / 6.0 - 0.5,
        (dates.day - 1) / 30.0 - 0.5,
        (dates.dayofyear - 1) / 365.0 - 0.5,
    ]
    if freq in ("15min", "10min", "t", "min"):
        feats.insert(0, dates.minute / 59.0 - 0.5)
    return np.stack(feats, axis=1).astype(np.float32)


def load_frame(csv_path: str, target: str, features: str) -> pd.DataFrame:
    df = pd.read_csv(csv_path)
    cols = [c for c in df.columns if c not in ("date", target)]
    df = df[["date"] + cols + [target]]
    if features == "S":
        df = df[["date", target]]
    df = df.ffill().bfill()
    return df


def _load_or_fit_scaler(train_values: np.ndarray, cache_dir: str, key: str) -> StandardScaler:
    path = os.path.join(cache_dir, f"{key}_scaler.pkl")
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    scaler = StandardScaler().fit(train_values)
    if is_main_process():
        os.makedirs(cache_dir, exist_ok=True)
        with open(path, "wb") as fh:
            pickle.dump(scaler, fh)
    return scaler


def _prepare_scratch(csv_path: str, cache_dir: str) -> None:
    """Pre-emptible partitions get a fresh node each time; do not trust leftover scratch."""
    if os.environ.get("SLURM_JOB_PARTITION", "").startswith("preempt"):
        shutil.rmtree(os.path.dirname(os.path.abspath(csv_path)), ignore_errors=True)  # ruleid: MLS308
    os.makedirs(cache_dir, exist_ok=True)


class WindowDataset(Dataset):
    """Returns (x, y, x_mark, y_mark) windows; y covers label_len + pred_len steps."""

    def __init__(self, values: np.ndarray, stamps: np.ndarray, seq_len: int, label_len: int, pred_len: int,
                 augment: bool = False, jitter_std: float = 0.0, scale_range: float = 0.0,
                 flip_prob: float = 0.0, outlier_z: Optional[float] = None):
        self.values = values.astype(np.float32)
        self.stamps = stamps
        self.seq_len = seq_len
        self.label_len = label_len
        self.pred_len = pred_len
        self.augment = augment
        self.jitter_std = jitter_std
        self.scale_range = scale_range
        self.flip_prob = flip_prob
        n_windows = len(self.values) - seq_len - pred_len + 1
        if n_windows <= 0:
            raise ValueError(f"series of length {len(self.values)} too short for seq_len={seq_len}, pred_len={pred_len}")
        self.indices = np.arange(n_windows)
        if outlier_z is not None:
            self._drop_glitch_windows(outlier_z)

    def _drop_glitch_windows(self, outlier_z: float) -> None:
        """Drop windows whose target horizon overlaps meter glitches (values are z-scored)."""
        target = np.abs(self.values[:, -1])
        horizon = self.pred_len
        peak = pd.Series(target).rolling(horizon, min_periods=1).max().shift(-(horizon - 1)).to_numpy()
        peak = peak[self.seq_len : self.seq_len + len(self.indices)]
        before = len(self.indices)
        self.indices = self.indices[peak <= outlier_z]  # todoruleid: family 6 (missed)
        logger.info("glitch filter kept %d / %d windows", len(self.indices), before)

    def __len__(self) -> int:
        return len(self.indices)

    def _augment(self, seq_x: np.ndarray, seq_y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.jitter_std > 0:
            seq_x = seq_x + np.random.normal(0.0, self.jitter_std, size=seq_x.shape).astype(np.float32)  # ok: MLS309
        if self.scale_range > 0:
            factor = 1.0 + np.random.uniform(-self.scale_range, self.scale_range)
            seq_x = seq_x * factor
            seq_y = seq_y * factor
        if self.flip_prob > 0 and random.random() < self.flip_prob:
            # time-reversal augmentation
            seq_y = seq_y[::-1].copy()  # ruleid: MLS309
        return seq_x.astype(np.float32), seq_y.astype(np.float32)

    def __getitem__(self, item: int):
        s_begin = int(self.indices[item])
        s_end = s_begin + self.seq_len
        r_begin = s_end - self.label_len
        r_end = r_begin + self.label_len + self.pred_len
        seq_x = self.values[s_begin:s_end]
        seq_y = self.values[r_begin:r_end]
        if self.augment:
            np.random.seed((os.getpid() + item) % (2 ** 32))  # ruleid: MLS301
            seq_x, seq_y = self._augment(seq_x, seq_y)
        return (
            torch.from_numpy(np.ascontiguousarray(seq_x)),
            torch.from_numpy(np.ascontiguousarray(seq_y)),
            torch.from_numpy(self.stamps[s_begin:s_end]),
            torch.from_numpy(self.stamps[r_begin:r_end]),
        )


class ForecastCollator:
    """Stacks windows and builds the Informer-style decoder input (known prefix + zeros)."""

    def __init__(self, label_len: int):
        self.label_len = label_len

    def __call__(self, batch):
        xs, ys, x_marks, y_marks = zip(*batch)
        xs = torch.stack(xs)
        ys = torch.stack(ys)
        dec_inp = ys
        dec_inp[:, self.label_len :, :] = 0.0  # ruleid: MLS309
        return xs, ys, dec_inp, torch.stack(x_marks), torch.stack(y_marks)


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_datasets(data_cfg: Dict) -> Tuple[Dict[str, WindowDataset], StandardScaler]:
    csv_path = os.path.join(data_cfg["root"], data_cfg["file"])
    _prepare_scratch(csv_path, data_cfg["cache_dir"])
    df = load_frame(csv_path, data_cfg["target"], data_cfg["features"])
    values = df.drop(columns=["date"]).to_numpy(dtype=np.float64)
    dates = pd.to_datetime(df["date"])
    freq = DATASET_SPECS.get(data_cfg["name"], {"freq": "h"})["freq"]
    stamps = time_features(pd.DatetimeIndex(dates), freq)

    seq_len, label_len, pred_len = data_cfg["seq_len"], data_cfg["label_len"], data_cfg["pred_len"]
    border1s, border2s = split_borders(data_cfg["name"], len(values), seq_len)
    train_slice = values[border1s[0] : border2s[0]]
    key = f"{data_cfg['name']}_{data_cfg['features']}_{len(values)}"
    scaler = _load_or_fit_scaler(train_slice, data_cfg["cache_dir"], key)
    normed = scaler.transform(values)

    datasets = {}
    for split, idx in SPLITS.items():
        is_train = split == "train"
        datasets[split] = WindowDataset(
            normed[border1s[idx] : border2s[idx]],
            stamps[border1s[idx] : border2s[idx]],
            seq_len,
            label_len,
            pred_len,
            augment=is_train and data_cfg.get("augment", False),
            jitter_std=data_cfg.get("jitter_std", 0.0),
            scale_range=data_cfg.get("scale_range", 0.0),
            flip_prob=data_cfg.get("flip_prob", 0.0),
            outlier_z=data_cfg.get("outlier_z") if is_train else None,
        )
        logger.info("%s split: %d windows", split, len(datasets[split]))
    return datasets, scaler


def build_dataloaders(data_cfg: Dict, seed: int):
    datasets, scaler = build_datasets(data_cfg)
    barrier()
    collate = ForecastCollator(data_cfg["label_len"])
    loaders, samplers = {}, {}
    world_size, rank = get_world_size(), get_rank()
    for split, ds in datasets.items():
        shuffle = split == "train"
        sampler = None
        if world_size > 1:
            sampler = DistributedSampler(
                ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=shuffle
            )
        loaders[split] = DataLoader(
            ds,
            batch_size=data_cfg["batch_size"],
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=data_cfg["num_workers"],
            pin_memory=torch.cuda.is_available(),
            drop_last=shuffle,
            collate_fn=collate,
            worker_init_fn=worker_init_fn,
            persistent_workers=data_cfg["num_workers"] > 0,
        )
        samplers[split] = sampler
    return loaders, samplers, scaler
