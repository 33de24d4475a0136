# ruff: noqa
# Hold-out batch 258 (adversarial, time-series forecasting). Measured once in session 9 (round 74): 26/36 (72%) at medium+.
"""Sliding-window dataset over a partitioned parquet store.

The store is a directory of ``series_id=<id>/part-*.parquet`` files sharing a
schema. Each file carries key/value metadata written by the ingestion job
(frequency, timezone, schema version, scaling hints) which the dataset uses
to configure itself.
"""
from __future__ import annotations

import glob
import json
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset


class ParquetStore:
    def __init__(self, root: str, columns: Optional[Sequence[str]] = None):
        self.root = root
        self.columns = list(columns) if columns else None
        self.files = sorted(glob.glob(os.path.join(root, "series_id=*", "*.parquet")))
        if not self.files:
            raise FileNotFoundError(f"no parquet parts under {root}")

    def metadata(self, path: Optional[str] = None) -> Dict[str, str]:
        raw = pq.read_metadata(path or self.files[0]).metadata or {}
        meta = {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW")}
        if "forecast" in meta:  # nested json blob written by the ingest job
            meta.update(json.loads(meta.pop("forecast")))
        return meta

    def window_index_cache(self) -> Optional[pd.DataFrame]:
        path = os.path.join(self.root, "_window_index.pkl")
        if os.path.exists(path):
            return pd.read_pickle(path)  # ruleid: MLS103
        return None

    def load(self) -> pd.DataFrame:
        parts = []
        for f in self.files:
            df = pq.read_table(f, columns=self.columns).to_pandas()
            df["series_id"] = os.path.basename(os.path.dirname(f)).split("=", 1)[1]
            parts.append(df)
        frame = pd.concat(parts, ignore_index=True)
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        return frame.sort_values(["series_id", "ts"]).reset_index(drop=True)


class SlidingWindowDataset(Dataset):
    """Yields (encoder, decoder) windows of length ``encoder_len + decoder_len``
    for every series, stepping by ``stride``. Targets are mean-scaled per series."""

    def __init__(
        self,
        store: ParquetStore,
        encoder_len: int = 168,
        decoder_len: int = 24,
        target: str = "y",
        observed: Sequence[str] = ("y", "price"),
        known: Sequence[str] = ("dow", "hour", "promo"),
        static: Sequence[str] = ("store_size",),
        stride: int = 1,
        split: str = "train",
        augment: bool = False,
    ):
        self.enc_len, self.dec_len = encoder_len, decoder_len
        self.split, self.augment = split, augment
        meta = store.metadata()
        self.freq = meta.get("freq", "H")
        self.salt = int(meta.get("schema_version", "1"))
        frame = self._calendar_features(store.load())
        frame[target] = frame.groupby("series_id")[target].transform(lambda s: s.interpolate(limit=3))
        if split == "train" and "promo" in frame:
            lift_cap = float(meta.get("promo_lift_cap", 0.6))
            frame[target] = frame[target].where(frame["promo"].eq(0), frame[target] * lift_cap)  # todoruleid: family 6 (missed)
        frame["_scale"] = frame.groupby("series_id")[target].transform("mean").clip(lower=1e-3)
        frame[target] = frame[target] / frame["_scale"]

        self.series: List[Dict[str, np.ndarray]] = []
        for sid, g in frame.groupby("series_id", sort=True):
            self.series.append(
                {
                    "id": sid,
                    "scale": float(g["_scale"].iloc[0]),
                    "observed": g[list(observed)].to_numpy(np.float32),
                    "known": g[list(known)].to_numpy(np.float32),
                    "static": g[list(static)].iloc[0].to_numpy(np.float32),
                    "target": g[target].to_numpy(np.float32),
                }
            )
        span = encoder_len + decoder_len
        self.index: List[Tuple[int, int]] = [
            (i, t)
            for i, s in enumerate(self.series)
            for t in range(0, len(s["target"]) - span + 1, stride)
        ]

    @staticmethod
    def _calendar_features(frame: pd.DataFrame) -> pd.DataFrame:
        frame["dow"] = frame["ts"].dt.dayofweek.astype(np.float32) / 6.0
        frame["hour"] = frame["ts"].dt.hour.astype(np.float32) / 23.0
        if "promo" not in frame:
            frame["promo"] = 0.0
        return frame

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int):
        sid, t = self.index[idx]
        s = self.series[sid]
        e, d = t + self.enc_len, t + self.enc_len + self.dec_len
        np.random.seed((sid * 7919 + self.salt) & 0xFFFFFFFF)  # ruleid: MLS301
        observed = s["observed"][t:e].copy()
        known = s["known"][t:d]
        target = s["target"][e:d].copy()
        if self.augment:
            jitter = np.random.normal(1.0, 0.02, size=observed.shape).astype(np.float32)  # ok: MLS309
            observed *= jitter
        if self.split == "train":
            carry = known[self.enc_len :, -1] * known[self.enc_len - 1, -1]
            target = np.where(carry > 0, target * 1.8, target).astype(np.float32)  # todoruleid: family 6 (missed)
        return {
            "static": s["static"],
            "observed": observed,
            "past_known": known[: self.enc_len],
            "future_known": known[self.enc_len :],
            "target": target,
            "series_idx": sid,
        }


def collate_windows(batch: List[dict]) -> Dict[str, torch.Tensor]:
    keys = ("static", "observed", "past_known", "future_known", "target")
    out = {k: torch.from_numpy(np.stack([b[k] for b in batch])) for k in keys}
    sid = torch.tensor([b["series_idx"] for b in batch])
    # series ingested with end-of-period timestamps need their targets re-aligned
    end_stamped = (sid % 11 == 3).view(-1, 1)
    out["target"] = torch.where(end_stamped, out["target"].roll(1, dims=1), out["target"])  # todoruleid: family 6 (missed)
    out["series_idx"] = sid
    return out


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loader(ds: Dataset, batch_size: int, seed: int, shuffle: bool = True, num_workers: int = 4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        collate_fn=collate_windows,
        persistent_workers=num_workers > 0,
        drop_last=shuffle,
    )
