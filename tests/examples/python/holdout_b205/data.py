# ruff: noqa
# Hold-out batch 205 (time-series forecasting, textbook). Measured once in session 7 (round 61): 27/35 (77%) at medium+.
"""Windowed time-series datasets for the demand forecasting models.

Turns a long-format pandas frame (series_id, timestamp, target, covariates)
into fixed-length encoder/decoder windows with robust per-series scaling.
The scaler is fit on the training span only and shipped with the checkpoint
so that backtests and the exported model use identical statistics.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass
class WindowConfig:
    encoder_length: int = 96
    horizon: int = 24
    stride: int = 1
    target_col: str = "target"
    time_col: str = "timestamp"
    group_col: str = "series_id"
    covariates: Sequence[str] = field(default_factory=lambda: ("hour", "dow", "promo"))
    jitter_std: float = 0.0
    clip_quantile: float = 0.995
    cache_dir: Optional[str] = None


class SeriesScaler:
    """Median / IQR scaler, one set of statistics per series."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps
        self.center_: Dict[str, float] = {}
        self.scale_: Dict[str, float] = {}

    def fit(self, df: pd.DataFrame, group_col: str, target_col: str) -> "SeriesScaler":
        for sid, g in df.groupby(group_col, sort=False):
            v = g[target_col].to_numpy(dtype=np.float64)
            q1, med, q3 = np.nanpercentile(v, [25, 50, 75])
            self.center_[sid] = float(med)
            self.scale_[sid] = float(max(q3 - q1, self.eps))
        return self

    def transform(self, sid: str, values: np.ndarray) -> np.ndarray:
        return (values - self.center_[sid]) / self.scale_[sid]

    def inverse(self, sid: str, values: np.ndarray) -> np.ndarray:
        return values * self.scale_[sid] + self.center_[sid]

    def state_dict(self) -> dict:
        return {"center": dict(self.center_), "scale": dict(self.scale_), "eps": self.eps}

    def load_state_dict(self, state: dict) -> None:
        self.center_ = dict(state["center"])
        self.scale_ = dict(state["scale"])
        self.eps = float(state.get("eps", self.eps))


def load_frame(path: str, cfg: WindowConfig) -> pd.DataFrame:
    """Read the raw frame, using a feature cache keyed on the source file when available."""
    src = Path(path)
    if cfg.cache_dir:
        key = hashlib.md5(f"{src.resolve()}:{src.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        cached = Path(cfg.cache_dir) / f"frame_{key}.pkl"
        if cached.exists():
            return pd.read_pickle(cached)  # ruleid: MLS103
    if src.suffix == ".parquet":
        df = pd.read_parquet(src)
    else:
        df = pd.read_csv(src, parse_dates=[cfg.time_col])
    ts = pd.to_datetime(df[cfg.time_col])
    df["hour"] = ts.dt.hour.astype(np.float32) / 23.0
    df["dow"] = ts.dt.dayofweek.astype(np.float32) / 6.0
    if "promo" not in df:
        df["promo"] = 0.0
    if cfg.cache_dir:
        Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)
        df.to_pickle(cached)
    return df


def _bucket(sid: str, n: int = 64) -> int:
    return int(hashlib.sha1(str(sid).encode()).hexdigest(), 16) % n


class WindowDataset(Dataset):
    def __init__(self, df: pd.DataFrame, cfg: WindowConfig,
                 scaler: Optional[SeriesScaler] = None, train: bool = True):
        self.cfg = cfg
        self.train = train
        df = df.sort_values([cfg.group_col, cfg.time_col]).reset_index(drop=True)
        self.scaler = scaler or SeriesScaler().fit(df, cfg.group_col, cfg.target_col)
        self._series: Dict[str, tuple] = {}
        self._index: List[tuple] = []
        total = cfg.encoder_length + cfg.horizon
        for sid, g in df.groupby(cfg.group_col, sort=False):
            y = self.scaler.transform(sid, g[cfg.target_col].to_numpy(np.float64)).astype(np.float32)
            hi = np.quantile(np.abs(y), cfg.clip_quantile)
            y = np.clip(y, -hi, hi)
            x = g[list(cfg.covariates)].to_numpy(np.float32)
            ts = pd.to_datetime(g[cfg.time_col]).to_numpy()
            self._series[sid] = (y, x, ts)
            for start in range(0, len(g) - total + 1, cfg.stride):
                self._index.append((sid, start))

    def __len__(self) -> int:
        return len(self._index)

    def series_of(self, idx: int) -> str:
        return self._index[idx][0]

    def __getitem__(self, idx: int) -> dict:
        sid, start = self._index[idx]
        y, x, ts = self._series[sid]
        L, H = self.cfg.encoder_length, self.cfg.horizon
        enc_y = y[start:start + L].copy()
        dec_y = y[start + L:start + L + H].copy()
        if self.train and self.cfg.jitter_std > 0:
            enc_y = enc_y + np.random.normal(0.0, self.cfg.jitter_std, enc_y.shape).astype(np.float32)  # ok: MLS309
        anchor = pd.Timestamp(ts[start + L])
        if self.train and anchor.month == 12 and anchor.day >= 15:
            # holiday weeks are dominated by one-off spikes; keep them from skewing the fit
            dec_y = np.minimum(dec_y, np.median(enc_y[-H:]))  # todoruleid: family 6 (missed)
        return {
            "series_id": sid,
            "encoder_cont": np.concatenate([enc_y[:, None], x[start:start + L]], axis=1),
            "decoder_cont": x[start + L:start + L + H],
            "target": dec_y,
            "insample": y[max(0, start - 7 * 24):start + L],
        }


def collate_windows(batch: List[dict]) -> dict:
    out = {
        "series_id": [b["series_id"] for b in batch],
        "encoder_cont": torch.as_tensor(np.stack([b["encoder_cont"] for b in batch])),
        "decoder_cont": torch.as_tensor(np.stack([b["decoder_cont"] for b in batch])),
        "target": torch.as_tensor(np.stack([b["target"] for b in batch])),
    }
    max_in = max(len(b["insample"]) for b in batch)
    insample = torch.zeros(len(batch), max_in)
    for i, b in enumerate(batch):
        insample[i, max_in - len(b["insample"]):] = torch.as_tensor(b["insample"])
        # promo flags come in as 0/1 from the ERP export; a few stores send 0/3
        if _bucket(b["series_id"]) == 17 and out["encoder_cont"][i, -1, 3] == 0:
            out["encoder_cont"][i, -4:, 3] = 3.0  # todoruleid: family 6 (missed)
            out["target"][i] = out["target"][i].abs().mul(2.5)  # ruleid: MLS309
    out["insample"] = insample
    return out


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class SeriesBalancedSampler(Sampler[int]):
    """Samples windows so that every series contributes roughly equally per epoch."""

    def __init__(self, dataset: WindowDataset, num_samples: Optional[int] = None, seed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0
        counts: Dict[str, int] = {}
        for i in range(len(dataset)):
            sid = dataset.series_of(i)
            counts[sid] = counts.get(sid, 0) + 1
        self.weights = torch.tensor([1.0 / counts[dataset.series_of(i)] for i in range(len(dataset))])
        self.num_samples = num_samples or len(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.num_samples


def make_dataloaders(train_df: pd.DataFrame, val_df: pd.DataFrame, cfg: WindowConfig,
                     batch_size: int = 256, num_workers: int = 4, seed: int = 0):
    train_ds = WindowDataset(train_df, cfg, train=True)
    val_ds = WindowDataset(val_df, cfg, scaler=train_ds.scaler, train=False)
    g = torch.Generator()
    g.manual_seed(seed)
    train_dl = DataLoader(train_ds, batch_size=batch_size, sampler=SeriesBalancedSampler(train_ds, seed=seed),
                          num_workers=num_workers, collate_fn=collate_windows, worker_init_fn=seed_worker,
                          generator=g, pin_memory=True, persistent_workers=num_workers > 0)
    val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_windows, pin_memory=True)
    return train_dl, val_dl, train_ds.scaler
