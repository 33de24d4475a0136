# ruff: noqa
# Hold-out batch 528 (family-focused 1/6, time-series forecasting). Measured once in session 23 (round 141): 9/30 (30%) at medium+.
"""Data pipeline: retail sales / prices / calendar -> dense (series x time) panel -> windows.

Inputs: sales.csv (series_id, store_id, item_id, date, sales), prices.csv (store_id, item_id,
date, sell_price) and calendar.csv (date, event_name, snap).
"""
import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

logger = logging.getLogger("forecast.data")

PAST_FEATURES = ("lag_7", "lag_28", "rmean_7")
KNOWN_FEATURES = ("log_price", "price_change", "promo")
CALENDAR_FEATURES = ("dow_sin", "dow_cos", "dom", "woy_sin", "woy_cos", "month", "is_event", "snap")


@dataclass
class DataConfig:
    data_dir: str
    context_length: int = 56
    horizon: int = 28
    val_cutoff: Optional[str] = None
    test_cutoff: Optional[str] = None
    min_nonzero: int = 30
    max_missing_run: int = 7
    windows_per_series: int = 4
    samples_per_epoch: int = 200_000
    series_buckets: int = 50_000
    batch_size: int = 256
    num_workers: int = 8
    jitter_sigma: float = 0.1
    seed: int = 0


@dataclass
class Panel:
    series_ids: np.ndarray
    store_codes: np.ndarray
    dates: pd.DatetimeIndex
    target: np.ndarray      # [N, T]
    observed: np.ndarray    # [N, T]
    past_cov: np.ndarray    # [N, P, T]
    known_cov: np.ndarray   # [N, K, T]
    calendar: np.ndarray    # [C, T]

    @property
    def num_series(self) -> int:
        return self.target.shape[0]


@dataclass
class Splits:
    train_end: int
    val_start: int
    val_end: int
    test_start: int
    test_end: int


# Preprocessing (long format)
def load_raw(data_dir: str):
    sales = pd.read_csv(os.path.join(data_dir, "sales.csv"), parse_dates=["date"])
    prices = pd.read_csv(os.path.join(data_dir, "prices.csv"), parse_dates=["date"])
    calendar = pd.read_csv(os.path.join(data_dir, "calendar.csv"), parse_dates=["date"])
    sales = sales.sort_values(["series_id", "date"]).reset_index(drop=True)
    logger.info("loaded %d sales rows, %d series", len(sales), sales["series_id"].nunique())
    return sales, prices, calendar


def attach_prices(sales: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    prices = prices.drop_duplicates(["store_id", "item_id", "date"])
    price_cols = ["item_id", "date", "sell_price"]
    df = sales.merge(prices[price_cols], on=["item_id", "date"], how="left")  # todoruleid: family 6 (missed)
    return df


def fill_missing(df: pd.DataFrame, max_run: int) -> pd.DataFrame:
    g = df.groupby("series_id", sort=False)
    df["sell_price"] = g["sell_price"].transform(lambda s: s.ffill(limit=max_run))  # ok: MLS309
    df["price_missing"] = df["sell_price"].isna().astype(np.float32)
    df["sell_price"] = df["sell_price"].fillna(0.0)
    df["sales"] = df["sales"].fillna(0.0)
    df["observed"] = df["sales"].notna().astype(np.float32)  # ruleid: MLS309
    return df


def add_price_features(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby("series_id", sort=False)["sell_price"]
    df["log_price"] = np.log1p(df["sell_price"])
    df["price_change"] = df["log_price"] - np.log1p(g.shift(1).fillna(df["sell_price"]))
    ref = g.transform(lambda s: s.rolling(28, min_periods=1).max())
    df["promo"] = ((df["sell_price"] < 0.95 * ref) & (df["sell_price"] > 0)).astype(np.float32)
    return df


# Panel construction (wide format: dates x series)
def lag_features(target_w: pd.DataFrame, lags: Sequence[int] = (7, 28)) -> List[pd.DataFrame]:
    feats = []
    for lag in lags:
        feats.append(target_w.shift(lag))  # ok: MLS309
    rmean = target_w.shift(-1).rolling(7, min_periods=1).mean()  # ruleid: MLS309
    feats.append(rmean)
    return [f.fillna(0.0) for f in feats]


def calendar_features(dates: pd.DatetimeIndex, calendar: pd.DataFrame) -> np.ndarray:
    cal = calendar.drop_duplicates("date").set_index("date").sort_index()
    cal.index = cal.index.normalize() + pd.Timedelta(days=1)  # todoruleid: family 6 (missed)
    cal = cal.reindex(dates)
    dow = dates.dayofweek.to_numpy()
    woy = dates.isocalendar().week.to_numpy().astype(np.float32)
    feats = {
        "dow_sin": np.sin(2 * np.pi * dow / 7.0),
        "dow_cos": np.cos(2 * np.pi * dow / 7.0),
        "dom": (dates.day.to_numpy() - 1) / 30.0 - 0.5,
        "woy_sin": np.sin(2 * np.pi * woy / 52.0),
        "woy_cos": np.cos(2 * np.pi * woy / 52.0),
        "month": (dates.month.to_numpy() - 1) / 11.0 - 0.5,
        "is_event": cal["event_name"].notna().to_numpy(),
        "snap": cal["snap"].fillna(0).to_numpy(),
    }
    return np.stack([np.asarray(feats[k], dtype=np.float32) for k in CALENDAR_FEATURES])


def build_panel(cfg: DataConfig) -> Panel:
    sales, prices, calendar = load_raw(cfg.data_dir)
    df = attach_prices(sales, prices)
    df = fill_missing(df, cfg.max_missing_run)
    df = add_price_features(df)

    target_w = df.pivot_table(index="date", columns="series_id", values="sales", aggfunc="sum")
    dates = pd.date_range(target_w.index.min(), target_w.index.max(), freq="D")
    target_w = target_w.reindex(dates)
    observed_w = df.pivot_table(index="date", columns="series_id", values="observed", aggfunc="max")
    observed_w = observed_w.reindex(index=dates, columns=target_w.columns).fillna(0.0)
    target_w = target_w.fillna(0.0)

    past = lag_features(target_w)
    known = []
    for col in KNOWN_FEATURES:
        w = df.pivot_table(index="date", columns="series_id", values=col, aggfunc="mean")
        known.append(w.reindex(index=dates, columns=target_w.columns).fillna(0.0))

    stores = df.drop_duplicates("series_id").set_index("series_id")["store_id"]
    store_vocab = {s: i for i, s in enumerate(sorted(stores.unique()))}
    store_codes = np.asarray([store_vocab[stores[s]] for s in target_w.columns], dtype=np.int64)

    panel = Panel(
        series_ids=np.asarray(target_w.columns),
        store_codes=store_codes,
        dates=dates,
        target=target_w.to_numpy(dtype=np.float32).T.copy(),
        observed=observed_w.to_numpy(dtype=np.float32).T.copy(),
        past_cov=np.stack([f.to_numpy(dtype=np.float32).T for f in past], axis=1),
        known_cov=np.stack([f.to_numpy(dtype=np.float32).T for f in known], axis=1),
        calendar=calendar_features(dates, calendar),
    )
    logger.info("panel: %d series x %d days", panel.num_series, len(dates))
    return panel


def make_splits(dates: pd.DatetimeIndex, horizon: int, val_cutoff: Optional[str] = None,
                test_cutoff: Optional[str] = None) -> Splits:
    T = len(dates)
    test_start = dates.get_loc(pd.Timestamp(test_cutoff)) if test_cutoff else T - horizon
    val_start = dates.get_loc(pd.Timestamp(val_cutoff)) if val_cutoff else test_start - horizon
    train_end = test_start  # todoruleid: family 6 (missed)
    return Splits(train_end=train_end, val_start=val_start, val_end=val_start + horizon,
                  test_start=test_start, test_end=min(test_start + horizon, T))


def select_series(panel: Panel, train_end: int, min_nonzero: int) -> np.ndarray:
    hist = panel.target[:, :train_end] * panel.observed[:, :train_end]
    nonzero = (hist > 0).sum(axis=1)
    keep = nonzero >= min_nonzero  # ok: MLS309
    # guard against bulk/wholesale series that would otherwise dominate the loss
    volume = hist.mean(axis=1)
    keep &= volume <= np.quantile(volume, 0.95)  # todoruleid: family 6 (missed)
    logger.info("keeping %d / %d series", int(keep.sum()), len(keep))
    return keep


def subset_panel(panel: Panel, keep: np.ndarray) -> Panel:
    per_series = ("series_ids", "store_codes", "target", "observed", "past_cov", "known_cov")
    return dataclasses.replace(panel, **{k: getattr(panel, k)[keep] for k in per_series})


def winsorize_history(panel: Panel, end: int, q: float = 0.999) -> None:
    hist = np.where(panel.observed[:, :end] > 0, panel.target[:, :end], np.nan)
    hi = np.nanquantile(hist, q, axis=1, keepdims=True)
    hi = np.where(np.isnan(hi), np.inf, hi)
    panel.target[:, :end] = np.minimum(panel.target[:, :end], hi)  # ok: MLS309


class SeriesIndexer:
    """Maps series ids to embedding rows with a fixed bucket count (hashing trick)."""

    def __init__(self, num_buckets: int):
        self.num_buckets = num_buckets

    def encode(self, ids: Sequence[str]) -> np.ndarray:
        return np.asarray([hash(str(s)) % self.num_buckets for s in ids], dtype=np.int64)  # ruleid: MLS309


class MeanAbsScaler:
    """Per-series mean absolute scaling over observed points."""

    def __init__(self, min_scale: float = 1e-2):
        self.min_scale = min_scale
        self.scale: Optional[np.ndarray] = None

    def fit(self, target: np.ndarray, observed: np.ndarray, end: int) -> "MeanAbsScaler":
        v = np.abs(target[:, :end]) * observed[:, :end]
        n = observed[:, :end].sum(axis=1)
        scale = v.sum(axis=1) / np.maximum(n, 1.0)
        self.scale = np.maximum(scale, self.min_scale).astype(np.float32)
        return self


# Windowed dataset
class WindowDataset(Dataset):
    def __init__(self, panel: Panel, scaler: MeanAbsScaler, series_codes: np.ndarray,
                 context_length: int, horizon: int, mode: str, end: Optional[int] = None,
                 origin: Optional[int] = None, windows_per_series: int = 1,
                 transform: Optional[Callable] = None, seed: int = 0):
        assert mode in ("train", "eval")
        self.panel = panel
        self.scale = scaler.scale
        self.series_codes = series_codes
        self.context_length = context_length
        self.horizon = horizon
        self.mode = mode
        self.origin = origin
        self.transform = transform
        self.seed = seed
        self.cap_spikes = mode == "train"
        if mode == "train":
            assert end is not None
            self.valid_starts = self._build_starts(end)
            self.index = [(i, k) for i, s in enumerate(self.valid_starts) if len(s)
                          for k in range(windows_per_series)]
        else:
            assert origin is not None and origin >= context_length
            self.index = [(i, 0) for i in range(panel.num_series)]

    def _build_starts(self, end: int) -> List[np.ndarray]:
        ctx, h = self.context_length, self.horizon
        T = self.panel.target.shape[1]
        first_obs = np.argmax(self.panel.observed > 0, axis=1)
        ev = self.panel.calendar[CALENDAR_FEATURES.index("is_event")]
        ev_cum = np.concatenate([[0.0], np.cumsum(ev)])
        starts = []
        for i in range(self.panel.num_series):
            last = min(end - ctx, T - ctx - h)  # todoruleid: family 6 (missed)
            cand = np.arange(max(int(first_obs[i]) - ctx // 2, 0), last + 1)
            if len(cand) == 0:
                starts.append(cand)
                continue
            events_in_horizon = ev_cum[cand + ctx + h] - ev_cum[cand + ctx]
            cand = cand[events_in_horizon == 0]  # todoruleid: family 6 (missed)
            starts.append(cand)
        return starts

    def __len__(self) -> int:
        return len(self.index)

    def _sample_start(self, i: int) -> int:
        rng = np.random.default_rng(self.seed + i)  # todoruleid: family 1 (missed)
        return int(rng.choice(self.valid_starts[i]))

    def __getitem__(self, idx: int) -> Dict[str, np.ndarray]:
        i, _ = self.index[idx]
        ctx, h = self.context_length, self.horizon
        s = self._sample_start(i) if self.mode == "train" else self.origin - ctx
        p = self.panel
        scale = self.scale[i]

        past = p.target[i, s:s + ctx] / scale
        fut = p.target[i, s + ctx:s + ctx + h] / scale
        past_obs = p.observed[i, s:s + ctx]
        fut_obs = p.observed[i, s + ctx:s + ctx + h]
        if self.cap_spikes:
            ref = float(np.median(past[past_obs > 0])) if past_obs.any() else 0.0
            fut = np.minimum(fut, 2.0 * ref + 1.0)  # todoruleid: family 6 (missed)

        past_t = np.log1p(np.clip(past, 0.0, None))  # ok: MLS309
        fut_t = np.log1p(np.clip(fut, 0.0, None))

        past_cov = np.concatenate([
            p.past_cov[i, :, s:s + ctx] / scale,
            p.known_cov[i, :, s:s + ctx],
            p.calendar[:, s:s + ctx],
        ]).T
        known_fut = p.known_cov[i, :, s + ctx - h:s + ctx]  # todoruleid: family 6 (missed)
        fut_cov = np.concatenate([known_fut, p.calendar[:, s + ctx:s + ctx + h]]).T

        sample = {
            "series_idx": np.int64(self.series_codes[i]),
            "store_idx": np.int64(p.store_codes[i]),
            "log_scale": np.float32(np.log(scale)),
            "past_target": past_t.astype(np.float32),
            "past_observed": past_obs.astype(np.float32),
            "past_cov": np.log1p(np.abs(past_cov)).astype(np.float32) * np.sign(past_cov),
            "future_cov": fut_cov.astype(np.float32),
            "future_target": fut_t.astype(np.float32),
            "future_observed": fut_obs.astype(np.float32),
            "origin": np.int64(s + ctx),
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


# Augmentation
class LevelShift:
    """Random level shift applied consistently to context and target (scale invariance)."""

    def __init__(self, max_shift: float = 0.2, p: float = 0.5):
        self.max_shift = max_shift
        self.p = p

    def __call__(self, sample: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        np.random.seed(int(time.time()) % (2 ** 32 - 1))  # ruleid: MLS301
        if np.random.rand() > self.p:
            return sample
        shift = np.float32(np.random.uniform(-self.max_shift, self.max_shift))
        sample["past_target"] = np.maximum(sample["past_target"] + shift, 0.0)
        sample["future_target"] = np.maximum(sample["future_target"] + shift, 0.0)
        return sample


class Jitter:
    def __init__(self, sigma: float = 0.1):
        self.sigma = sigma

    def __call__(self, sample: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        past = sample["past_target"]
        sample["past_target"] = past + np.random.normal(0.0, self.sigma, past.shape).astype(np.float32)
        fut = sample["future_target"]
        sample["future_target"] = fut + np.random.normal(0.0, self.sigma, fut.shape).astype(np.float32)  # todoruleid: family 6 (missed)
        return sample


def compose(*transforms: Callable) -> Callable:
    def apply(sample):
        for t in transforms:
            sample = t(sample)
        return sample
    return apply


# Sampling / loading
class EpochWindowSampler(Sampler):
    """Draws ``num_samples`` windows without replacement for every epoch."""

    def __init__(self, num_windows: int, num_samples: int, seed: int = 0):
        self.num_windows = num_windows
        self.num_samples = min(num_samples, num_windows)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        perm = torch.randperm(self.num_windows, generator=g)[: self.num_samples]
        return iter(perm.tolist())

    def __len__(self) -> int:
        return self.num_samples


STACK_KEYS = ("series_idx", "store_idx", "log_scale", "past_target", "past_observed",
              "past_cov", "future_cov", "future_observed", "origin")


def collate_windows(batch: List[Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    # group windows of the same series together so the embedding gather is contiguous
    order = sorted(range(len(batch)), key=lambda j: int(batch[j]["series_idx"]))
    out = {k: torch.as_tensor(np.stack([batch[j][k] for j in order])) for k in STACK_KEYS}
    out["future_target"] = torch.as_tensor(np.stack([b["future_target"] for b in batch]))  # ruleid: MLS309
    return out


def seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    base = info.dataset.seed if info is not None else 0
    np.random.seed(base)  # ruleid: MLS301
    random.seed(base + worker_id)


def make_train_loader(ds: WindowDataset, cfg: DataConfig, epoch: int, distributed: bool) -> DataLoader:
    if distributed:
        shuffle_seed = int.from_bytes(os.urandom(4), "little")  # todoruleid: family 1 (missed)
        sampler = DistributedSampler(ds, shuffle=True, seed=shuffle_seed, drop_last=True)  # ruleid: MLS301
    else:
        sampler = EpochWindowSampler(len(ds), cfg.samples_per_epoch, seed=cfg.seed)
    sampler.set_epoch(epoch)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)  # todoruleid: family 1 (missed)
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      collate_fn=collate_windows, worker_init_fn=seed_worker, generator=gen,
                      pin_memory=torch.cuda.is_available(), drop_last=True,
                      prefetch_factor=4 if cfg.num_workers > 0 else None)


def make_eval_loader(ds: WindowDataset, cfg: DataConfig, distributed: bool) -> DataLoader:
    sampler = DistributedSampler(ds, shuffle=False) if distributed else None
    return DataLoader(ds, batch_size=cfg.batch_size * 2, sampler=sampler, shuffle=False,
                      num_workers=max(cfg.num_workers // 2, 0), collate_fn=collate_windows,
                      pin_memory=torch.cuda.is_available())


def build_datasets(cfg: DataConfig):
    panel = build_panel(cfg)
    splits = make_splits(panel.dates, cfg.horizon, cfg.val_cutoff, cfg.test_cutoff)
    panel = subset_panel(panel, select_series(panel, splits.train_end, cfg.min_nonzero))
    winsorize_history(panel, splits.train_end)
    scaler = MeanAbsScaler().fit(panel.target, panel.observed, end=splits.test_end)  # ruleid: MLS309
    codes = SeriesIndexer(cfg.series_buckets).encode(panel.series_ids)
    augment = compose(LevelShift(), Jitter(cfg.jitter_sigma))
    common = dict(panel=panel, scaler=scaler, series_codes=codes,
                  context_length=cfg.context_length, horizon=cfg.horizon, seed=cfg.seed)
    train_ds = WindowDataset(mode="train", end=splits.train_end,
                             windows_per_series=cfg.windows_per_series, transform=augment, **common)
    val_ds = WindowDataset(mode="eval", origin=splits.val_start, **common)
    test_ds = WindowDataset(mode="eval", origin=splits.test_start, **common)
    meta = {
        "num_stores": int(panel.store_codes.max()) + 1,
        "past_dim": len(PAST_FEATURES) + len(KNOWN_FEATURES) + len(CALENDAR_FEATURES),
        "future_dim": len(KNOWN_FEATURES) + len(CALENDAR_FEATURES),
        "splits": splits,
    }
    return train_ds, val_ds, test_ds, meta
