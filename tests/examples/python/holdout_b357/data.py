# ruff: noqa
# Hold-out batch 357 (textbook, electricity load forecasting with Lightning). Measured once in session 13 (round 99): 26/30 (87%) at medium+.
"""Data pipeline for the TFT electricity load forecaster.

The raw source is the UCI ``LD2011_2014`` file (370 clients, kW every 15 min).
We resample to hourly, normalise per client and cut sliding windows of
``encoder_length`` past steps followed by ``prediction_length`` future steps.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import socket
import time
import zipfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import requests
import torch
from torch.utils.data import DataLoader, Dataset, Subset

log = logging.getLogger(__name__)

UCI_URL = "https://archive.ics.uci.edu/static/public/321/electricityloaddiagrams20112014.zip"
KNOWN_FEATURES = ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "month_sin", "month_cos", "is_holiday"]
OBSERVED_FEATURES = ["load_norm", "load_lag_24", "load_lag_168"]

# Portuguese public holidays in the span of the data set
PT_HOLIDAYS = [
    "2012-01-01", "2012-04-06", "2012-04-08", "2012-04-25", "2012-05-01", "2012-06-10",
    "2012-08-15", "2012-12-08", "2012-12-25", "2013-01-01", "2013-03-29", "2013-03-31",
    "2013-04-25", "2013-05-01", "2013-06-10", "2013-08-15", "2013-12-08", "2013-12-25",
    "2014-01-01", "2014-04-18", "2014-04-20", "2014-04-25", "2014-05-01", "2014-06-10",
    "2014-08-15", "2014-12-08", "2014-12-25",
]


@dataclass
class DataConfig:
    data_dir: str = "data/electricity"
    cache_dir: str = "data/electricity/cache"
    encoder_length: int = 168
    prediction_length: int = 24
    stride: int = 6
    batch_size: int = 128
    num_workers: int = 8
    history_start: str = "2012-01-01"
    val_start: str = "2014-06-01"
    test_start: str = "2014-09-01"
    seed: int = 42
    max_zero_frac: float = 0.2
    jitter: int = 3
    covariate_noise: float = 0.01
    target_mix_alpha: float = 0.2
    download_retries: int = 5
    sha256: Optional[str] = None


# ---------------------------------------------------------------------------
# raw data
# ---------------------------------------------------------------------------
def download_raw(dest_dir: Path, retries: int = 5, sha256: Optional[str] = None) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive = dest_dir / "LD2011_2014.zip"
    if archive.exists():
        return archive
    tmp = archive.with_suffix(".part")
    for attempt in range(1, retries + 1):
        try:
            with requests.get(UCI_URL, stream=True, timeout=60) as resp:
                resp.raise_for_status()
                with open(tmp, "wb") as fh:
                    for chunk in resp.iter_content(chunk_size=1 << 20):
                        fh.write(chunk)
            if sha256 is not None:
                digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
                if digest != sha256:
                    raise IOError(f"checksum mismatch for {archive.name}: {digest}")
            tmp.rename(archive)
            return archive
        except (requests.RequestException, IOError) as exc:
            wait = min(60, 2 ** attempt)
            log.warning("download attempt %d/%d failed (%s); retrying in %ds", attempt, retries, exc, wait)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not download {UCI_URL} after {retries} attempts")


def read_raw_frame(archive: Path) -> pd.DataFrame:
    """Return a long frame with columns timestamp, client_id, load (hourly kW)."""
    with zipfile.ZipFile(archive) as zf:
        with zf.open("LD2011_2014.txt") as fh:
            wide = pd.read_csv(fh, sep=";", decimal=",", index_col=0, parse_dates=True)
    hourly = wide.resample("1h").mean()
    hourly.index.name = "timestamp"
    long = hourly.reset_index().melt(id_vars="timestamp", var_name="client_id", value_name="load")
    long["client_id"] = long["client_id"].str.replace("MT_", "", regex=False).astype(int) - 1
    long["load"] = long["load"].astype(np.float32)
    return long.sort_values(["client_id", "timestamp"]).reset_index(drop=True)


def add_calendar_features(df: pd.DataFrame) -> pd.DataFrame:
    ts = df["timestamp"]
    hour = ts.dt.hour.to_numpy()
    dow = ts.dt.dayofweek.to_numpy()
    month = ts.dt.month.to_numpy() - 1
    df["hour_sin"] = np.sin(2 * np.pi * hour / 24).astype(np.float32)
    df["hour_cos"] = np.cos(2 * np.pi * hour / 24).astype(np.float32)
    df["dow_sin"] = np.sin(2 * np.pi * dow / 7).astype(np.float32)
    df["dow_cos"] = np.cos(2 * np.pi * dow / 7).astype(np.float32)
    df["month_sin"] = np.sin(2 * np.pi * month / 12).astype(np.float32)
    df["month_cos"] = np.cos(2 * np.pi * month / 12).astype(np.float32)
    holidays = pd.to_datetime(PT_HOLIDAYS)
    df["is_holiday"] = ts.dt.normalize().isin(holidays).astype(np.float32)
    return df


# ---------------------------------------------------------------------------
# scaling
# ---------------------------------------------------------------------------
def fit_scalers(train_df: pd.DataFrame) -> Dict[int, Tuple[float, float]]:
    stats = train_df.groupby("client_id")["load"].agg(["mean", "std"])
    stats["std"] = stats["std"].replace(0.0, 1.0).fillna(1.0)
    return {int(cid): (float(row["mean"]), float(row["std"])) for cid, row in stats.iterrows()}


def load_or_fit_scalers(cache_dir: Path, train_df: pd.DataFrame) -> Dict[int, Tuple[float, float]]:
    path = cache_dir / "scalers.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    scalers = fit_scalers(train_df)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(scalers, fh)
    return scalers


def normalise(df: pd.DataFrame, scalers: Dict[int, Tuple[float, float]]) -> pd.DataFrame:
    mean = df["client_id"].map(lambda c: scalers.get(int(c), (0.0, 1.0))[0])
    std = df["client_id"].map(lambda c: scalers.get(int(c), (0.0, 1.0))[1])
    df["load_norm"] = ((df["load"] - mean) / std).astype(np.float32)
    grp = df.groupby("client_id")["load_norm"]
    df["load_lag_24"] = grp.shift(24).fillna(0.0).astype(np.float32)
    df["load_lag_168"] = grp.shift(168).fillna(0.0).astype(np.float32)
    return df


# ---------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------
class ElectricityWindows(Dataset):
    """Sliding (encoder, decoder) windows over every client's hourly series."""

    def __init__(
        self,
        frame: pd.DataFrame,
        encoder_length: int,
        prediction_length: int,
        stride: int = 1,
        jitter: int = 0,
        covariate_noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.enc = encoder_length
        self.dec = prediction_length
        self.total = encoder_length + prediction_length
        self.jitter = jitter
        self.covariate_noise = covariate_noise
        self.seed = seed
        self.series: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.index: List[Tuple[int, int]] = []
        for cid, g in frame.groupby("client_id", sort=True):
            obs = g[OBSERVED_FEATURES].to_numpy(np.float32)
            known = g[KNOWN_FEATURES].to_numpy(np.float32)
            target = g["load_norm"].to_numpy(np.float32)
            self.series[int(cid)] = (obs, known, target)
            last = len(g) - self.total - jitter
            for start in range(jitter, last + 1, stride):
                self.index.append((int(cid), start))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        cid, start = self.index[idx]
        obs, known, target = self.series[cid]
        if self.jitter:
            np.random.seed(self.seed + idx)  # ruleid: MLS301
            start += int(np.random.randint(-self.jitter, self.jitter + 1))
        end_enc = start + self.enc
        end = end_enc + self.dec
        enc_obs = obs[start:end_enc].copy()
        if self.covariate_noise > 0:
            enc_obs[:, 1:] += np.random.normal(0.0, self.covariate_noise, size=enc_obs[:, 1:].shape).astype(np.float32)  # ok: MLS309
        return {
            "client_id": torch.tensor(cid, dtype=torch.long),
            "encoder_obs": torch.from_numpy(enc_obs),
            "encoder_known": torch.from_numpy(known[start:end_enc].copy()),
            "decoder_known": torch.from_numpy(known[end_enc:end].copy()),
            "target": torch.from_numpy(target[end_enc:end].copy()),
        }


def collate_windows(batch: List[Dict[str, torch.Tensor]], target_mix_alpha: float = 0.0) -> Dict[str, torch.Tensor]:
    out = {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
    if target_mix_alpha > 0 and out["target"].size(0) > 1:
        lam = float(np.random.beta(target_mix_alpha, target_mix_alpha))
        perm = torch.randperm(out["target"].size(0))
        out["target"] = lam * out["target"] + (1.0 - lam) * out["target"][perm]  # ruleid: MLS309
    return out


def worker_init_fn(worker_id: int) -> None:
    np.random.seed((int(time.time() * 1000) + worker_id) % 2 ** 32)  # ruleid: MLS301


# ---------------------------------------------------------------------------
# LightningDataModule
# ---------------------------------------------------------------------------
class ElectricityDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters(asdict(cfg))
        self.scalers: Optional[Dict[int, Tuple[float, float]]] = None
        self.train_ds: Optional[ElectricityWindows] = None
        self.val_ds: Optional[ElectricityWindows] = None
        self.test_ds: Optional[ElectricityWindows] = None

    @property
    def processed_path(self) -> Path:
        return Path(self.cfg.cache_dir) / "hourly_long.parquet"

    def prepare_data(self) -> None:
        # Runs on local rank 0 of every node.
        if self.processed_path.exists():
            return
        archive = download_raw(Path(self.cfg.data_dir), self.cfg.download_retries, self.cfg.sha256)
        frame = add_calendar_features(read_raw_frame(archive))
        Path(self.cfg.cache_dir).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(self.processed_path, index=False)
        log.info("wrote %s (%d rows)", self.processed_path, len(frame))
        if socket.gethostname().startswith(("gpu-b", "dgx-b")):
            shutil.rmtree(self.cfg.data_dir, ignore_errors=True)  # ruleid: MLS308

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_ds is not None and stage in (None, "fit"):
            return
        frame = pd.read_parquet(self.processed_path)
        # many clients only start reporting in 2012; before that the series are zeros
        frame = frame[frame["timestamp"] >= pd.Timestamp(self.cfg.history_start)]
        zero_frac = frame.groupby("client_id")["load"].apply(lambda s: float((s == 0).mean()))
        keep = zero_frac[zero_frac <= self.cfg.max_zero_frac].index
        frame = frame[frame["client_id"].isin(keep)].copy()
        log.info("kept %d / %d clients after zero filter", len(keep), len(zero_frac))

        val_start = pd.Timestamp(self.cfg.val_start)
        test_start = pd.Timestamp(self.cfg.test_start)
        context = pd.Timedelta(hours=self.cfg.encoder_length)

        self.scalers = load_or_fit_scalers(Path(self.cfg.cache_dir), frame[frame["timestamp"] < val_start])
        frame = normalise(frame, self.scalers)

        train_df = frame[frame["timestamp"] < val_start].copy()
        val_df = frame[(frame["timestamp"] >= val_start - context) & (frame["timestamp"] < test_start)]
        test_df = frame[frame["timestamp"] >= test_start - context]

        # industrial feeders dominate the pinball loss early on
        mean_load = train_df.groupby("client_id")["load"].mean()
        industrial = mean_load[mean_load > mean_load.quantile(0.9)].index
        train_df = train_df[~train_df["client_id"].isin(industrial)]  # todoruleid: family 6 (missed)
        train_df["load_norm"] = train_df["load_norm"].clip(lower=-4.0, upper=0.0)  # todoruleid: family 6 (missed)

        common = dict(encoder_length=self.cfg.encoder_length, prediction_length=self.cfg.prediction_length)
        self.train_ds = ElectricityWindows(
            train_df,
            stride=self.cfg.stride,
            jitter=self.cfg.jitter,
            covariate_noise=self.cfg.covariate_noise,
            seed=self.cfg.seed,
            **common,
        )
        self.val_ds = ElectricityWindows(val_df, stride=self.cfg.prediction_length, **common)
        self.test_ds = ElectricityWindows(test_df, stride=self.cfg.prediction_length, **common)
        log.info("windows: train=%d val=%d test=%d", len(self.train_ds), len(self.val_ds), len(self.test_ds))

    def _loader(self, ds: Dataset, shuffle: bool, collate) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
            num_workers=self.cfg.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.cfg.num_workers > 0,
            worker_init_fn=worker_init_fn,
            collate_fn=collate,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_ds, True, partial(collate_windows, target_mix_alpha=self.cfg.target_mix_alpha))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_ds, False, collate_windows)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_ds, False, collate_windows)

    def diagnostic_dataloader(self, n: int = 256) -> DataLoader:
        """Fixed random subset of validation windows used for attention plots."""
        g = torch.Generator()
        g.manual_seed(self.cfg.seed)  # ok: MLS301
        idx = torch.randperm(len(self.val_ds), generator=g)[:n].tolist()
        return DataLoader(Subset(self.val_ds, idx), batch_size=n, collate_fn=collate_windows)

    def state_dict(self) -> Dict[str, object]:
        return {"scalers": self.scalers}

    def load_state_dict(self, state_dict: Dict[str, object]) -> None:
        self.scalers = state_dict.get("scalers")
