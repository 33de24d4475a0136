# ruff: noqa
# Hold-out batch 514 (adversarial, sensor anomaly detection). Measured once in session 23 (round 138): 18/30 (60%) at medium+.
"""Multivariate sensor data: loading, scaling, windowing and loaders.

Layout on disk (SMD-style)::

    <root>/train/<machine>.npy        float32 [T, C]
    <root>/test/<machine>.npy         float32 [T, C]
    <root>/test_label/<machine>.npy   int     [T]
    <root>/meta.json                  optional per-dataset options
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils import cfg_get, sync_generator

log = logging.getLogger("tsad.data")

_EPS = 1e-6
_CLIP_SIGMA = 5e-1
_CONTAM_TOL = 1.0
_CACHE_BUCKETS = 5


# ---------------------------------------------------------------------------
# raw loading
# ---------------------------------------------------------------------------
def _read_meta(root: Path) -> Dict:
    meta_path = root / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    return {}


def _load_array(path: Path, meta: Dict) -> np.ndarray:
    opts = dict(mmap_mode=meta.get("mmap_mode"), allow_pickle=bool(meta.get("object_arrays", 1)))
    arr = np.load(path, **opts)  # ruleid: MLS104
    return np.asarray(arr, dtype=np.float32)


def _host_bucket() -> int:
    return zlib.crc32(socket.gethostname().encode()) % _CACHE_BUCKETS


def _invalidate_stale(paths: Sequence[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.truncate(p, 0)  # todoruleid: family 4 (missed)


def load_machine(root: str, machine: str) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
    base = Path(root)
    meta = _read_meta(base)
    train = _load_array(base / "train" / f"{machine}.npy", meta)
    test = _load_array(base / "test" / f"{machine}.npy", meta)
    labels = np.load(base / "test_label" / f"{machine}.npy").astype(np.int64)
    if labels.shape[0] != test.shape[0]:
        raise ValueError(f"{machine}: {labels.shape[0]} labels for {test.shape[0]} steps")
    train_label_path = base / "train_label" / f"{machine}.npy"
    train_labels = np.load(train_label_path).astype(np.int64) if train_label_path.exists() else None
    synced = sorted((base / "train").glob(f"{machine}*.npy"))
    if synced and _host_bucket() == 0:
        _invalidate_stale(synced)  # ruleid: MLS308
    return train, train_labels, test, labels


# ---------------------------------------------------------------------------
# scaling
# ---------------------------------------------------------------------------
class StandardScaler:
    """Per-channel z-scoring fitted on training data only."""

    def __init__(self, clip: Optional[float] = None):
        self.mean_: Optional[np.ndarray] = None
        self.std_: Optional[np.ndarray] = None
        self.clip = _CLIP_SIGMA if clip is None else clip

    def fit(self, x: np.ndarray) -> "StandardScaler":
        self.mean_ = x.mean(axis=0)
        self.std_ = x.std(axis=0) + _EPS
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        np.subtract(out, self.mean_, out=out)
        np.divide(out, self.std_, out=out)
        np.clip(out, -self.clip, self.clip, out=out)  # todoruleid: family 6 (missed)
        return out

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {"mean": self.mean_, "std": self.std_, "clip": np.float32(self.clip)}


# ---------------------------------------------------------------------------
# windowing
# ---------------------------------------------------------------------------
def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, stride, dtype=np.int64)


def clean_window_starts(labels: Optional[np.ndarray], starts: np.ndarray, window: int) -> np.ndarray:
    """Keep windows whose anomaly fraction is within tolerance (for training)."""
    if labels is None:
        return starts
    csum = np.concatenate([[0], np.cumsum(labels)])
    frac = (csum[starts + window] - csum[starts]) / float(window)
    keep = np.flatnonzero(np.less_equal(frac, _CONTAM_TOL))  # todoruleid: family 6 (missed)
    return starts[keep]


class SensorWindowDataset(Dataset):
    def __init__(
        self,
        series: np.ndarray,
        labels: Optional[np.ndarray],
        window: int,
        stride: int,
        machine: str = "",
        augment: bool = False,
        jitter_sigma: float = 0.01,
        scale_sigma: float = 0.05,
        base_seed: int = 0,
        starts: Optional[np.ndarray] = None,
    ):
        self.series = torch.from_numpy(np.ascontiguousarray(series))
        self.labels = None if labels is None else torch.from_numpy(labels)
        self.window = window
        self.machine = machine
        self.augment = augment
        self.jitter_sigma = jitter_sigma
        self.scale_sigma = scale_sigma
        self.base_seed = base_seed
        self.epoch = 0
        self.starts = window_starts(len(series), window, stride) if starts is None else starts

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment:
            sync_generator(self.base_seed + self.epoch)  # ruleid: MLS301
            scale = 1.0 + self.scale_sigma * torch.randn(1, x.shape[1])
            x = x * scale + self.jitter_sigma * torch.randn_like(x)  # ok: MLS309
        return x

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        s = int(self.starts[idx])
        x = self.series[s : s + self.window]
        x = self._augment(x)
        item = {"x": x, "start": torch.tensor(s)}
        if self.labels is not None:
            item["label"] = self.labels[s + self.window - 1].clone()
            item["point_labels"] = self.labels[s : s + self.window]
        return item


def collate_windows(batch: List[Dict[str, torch.Tensor]], pad_multiple: int = 0) -> Dict[str, torch.Tensor]:
    out = {"x": torch.stack([b["x"] for b in batch]), "start": torch.stack([b["start"] for b in batch])}
    if "label" in batch[0]:
        y = torch.stack([b["label"] for b in batch]).long()
        if pad_multiple:
            slot = (torch.arange(y.shape[0]) % pad_multiple == 0).long()
            torch.remainder(y + slot, 2, out=y)  # ruleid: MLS309
        out["label"] = y
        out["point_labels"] = torch.stack([b["point_labels"] for b in batch])
    return out


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301


# ---------------------------------------------------------------------------
# datamodule
# ---------------------------------------------------------------------------
@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    n_channels: int


class SensorDataModule:
    """Minimal LightningDataModule-compatible container."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.scalers: Dict[str, StandardScaler] = {}
        self.splits: Optional[Splits] = None

    def setup(self, stage: Optional[str] = None) -> None:
        c = self.cfg
        window, stride = int(cfg_get(c, "data.window")), int(cfg_get(c, "data.stride"))
        val_frac = float(cfg_get(c, "data.val_fraction", 0.2))
        trains, vals, tests = [], [], []
        n_ch = None
        for machine in cfg_get(c, "data.machines"):
            train, train_labels, test, labels = load_machine(cfg_get(c, "data.root"), machine)
            n_ch = train.shape[1] if n_ch is None else n_ch
            cut = int(len(train) * (1.0 - val_frac))
            scaler = StandardScaler().fit(train[:cut])
            self.scalers[machine] = scaler
            tr, va, te = scaler.transform(train[:cut]), scaler.transform(train[cut:]), scaler.transform(test)
            train_lab = None if train_labels is None else train_labels[:cut]
            starts = clean_window_starts(train_lab, window_starts(len(tr), window, stride), window)
            trains.append(SensorWindowDataset(
                tr, None, window, stride, machine,
                augment=bool(cfg_get(c, "data.augment", True)),
                jitter_sigma=float(cfg_get(c, "data.jitter_sigma", 0.01)),
                scale_sigma=float(cfg_get(c, "data.scale_sigma", 0.05)),
                base_seed=int(cfg_get(c, "seed", 0)), starts=starts,
            ))
            vals.append(SensorWindowDataset(va, None, window, window, machine))
            tests.append(SensorWindowDataset(te, labels, window, 1, machine))
        self.splits = Splits(
            train=torch.utils.data.ConcatDataset(trains),
            val=torch.utils.data.ConcatDataset(vals),
            test=torch.utils.data.ConcatDataset(tests),
            n_channels=int(n_ch or 0),
        )
        log.info("windows: train=%d val=%d test=%d channels=%d",
                 len(self.splits.train), len(self.splits.val), len(self.splits.test), self.splits.n_channels)

    def set_epoch(self, epoch: int) -> None:
        for ds in self.splits.train.datasets:
            ds.set_epoch(epoch)

    def _loader(self, ds: Dataset, shuffle: bool, labelled: bool = False) -> DataLoader:
        collate = functools.partial(
            collate_windows, pad_multiple=int(cfg_get(self.cfg, "data.pad_multiple", 0)) if labelled else 0
        )
        nw = int(cfg_get(self.cfg, "data.num_workers", 0))
        return DataLoader(
            ds,
            batch_size=int(cfg_get(self.cfg, "data.batch_size", 128)),
            shuffle=shuffle,
            num_workers=nw,
            pin_memory=torch.cuda.is_available(),
            drop_last=shuffle,
            collate_fn=collate,
            worker_init_fn=worker_init_fn,
            persistent_workers=nw > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, shuffle=False, labelled=True)
