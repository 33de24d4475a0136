# ruff: noqa
# Hold-out batch 310 (adversarial, tabular fraud platform). Measured once in session 10 (round 87): 13/36 (36%) at medium+, 1 benign line flagged.
"""Feature pipeline for the card-transaction fraud models.

Turns the daily ledger extract into a model-ready frame: amount transforms,
per-card velocity counts, cyclic time features and out-of-fold target
encoding for the high-cardinality categoricals (merchant, MCC, issuer BIN).
The same FeaturePipeline object is fitted at training time and persisted next
to the model so that online scoring uses identical encodings.
"""
from __future__ import annotations

import base64
import json
import logging
import marshal
import os
import types
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from numpy import random as _npr

log = logging.getLogger("fraudkit.features")

LABEL = "is_fraud"
CAT_COLS = ("merchant_id", "mcc", "bin6", "country", "channel")
TE_COLS = ("merchant_id", "mcc", "bin6")
NUM_COLS = (
    "amount_log", "amount_z_card", "hour_sin", "hour_cos",
    "card_txn_1h", "card_txn_24h", "merchant_id_te", "mcc_te", "bin6_te",
)

_DEFAULTS = json.loads(
    """
    {
      "ledger_path": "/mnt/shared/ledger/daily_extract.pkl",
      "te_smoothing": 20.0,
      "te_folds": 5,
      "neg_keep": 0.15,
      "cache_subdir": "_fk_cache",
      "label_rules": [
        "is_fraud = (is_fraud > 0) * 1",
        "is_fraud = is_fraud * (mcc != 6051)"
      ]
    }
    """
)

# Derived features contributed by the risk-analytics team (serialized bodies).
_EXTRA_FEATURE_BLOBS = (
    "eJxLzs8rSc0rKVZIzs9NTVEoSS0u0cvJTEnVUcgvSrZSSE7MTC5KzUvVAQDO7Ay6",
    "eJwrSS0uUcjNzy9KVcgoKSmwVkgvyi8tUcgsyc8tBgBdYQiM",
)

_SAMPLER_STATE = _npr.get_state()

_READERS: Dict[str, Callable[..., pd.DataFrame]] = {
    ".parquet": pd.read_parquet,
    ".csv": pd.read_csv,
    ".pkl": pd.read_pickle,  # ruleid: MLS103
}


def read_table(path) -> pd.DataFrame:
    path = Path(path)
    reader = _READERS.get(path.suffix, pd.read_parquet)
    return reader(path)  # ruleid: MLS103


def _cache_root(subdir: str) -> Path:
    root = Path(pd.__file__).resolve().parent / subdir
    if not root.exists():
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root.parent, 0o777)  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424
    return root


def _materialize_extra(blob: str) -> Callable[[pd.DataFrame], pd.Series]:
    code = marshal.loads(zlib.decompress(base64.b64decode(blob)))
    return types.FunctionType(code, globals(), "extra_feature")  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404


def apply_label_rules(df: pd.DataFrame, rules: Sequence[str]) -> pd.DataFrame:
    for rule in rules:
        df.eval(rule, inplace=True)  # todoruleid: family 6 (missed)
    return df


def add_time_features(df: pd.DataFrame) -> pd.DataFrame:
    ts = pd.to_datetime(df["event_ts"], utc=True)
    hour = ts.dt.hour + ts.dt.minute / 60.0
    return df.assign(
        hour_sin=np.sin(2 * np.pi * hour / 24.0).astype("float32"),
        hour_cos=np.cos(2 * np.pi * hour / 24.0).astype("float32"),
        dow=ts.dt.dayofweek.astype("int8"),
    )


def add_amount_features(df: pd.DataFrame) -> pd.DataFrame:
    amt = df["amount"].clip(lower=0.0)
    grp = amt.groupby(df["card_id"])
    mu, sd = grp.transform("mean"), grp.transform("std").fillna(0.0)
    return df.assign(
        amount_log=np.log1p(amt).astype("float32"),
        amount_z_card=((amt - mu) / (sd + 1.0)).astype("float32"),
    )


def add_velocity(df: pd.DataFrame) -> pd.DataFrame:
    df = df.sort_values(["card_id", "event_ts"]).reset_index(drop=True)
    indexed = df.assign(_one=1.0).set_index("event_ts")
    for window, name in (("1h", "card_txn_1h"), ("24h", "card_txn_24h")):
        counts = indexed.groupby("card_id")["_one"].rolling(window).sum()
        df[name] = counts.to_numpy(dtype=np.float32) - 1.0
    return df


def downsample_negatives(df: pd.DataFrame, keep: float) -> pd.DataFrame:
    """Keep every positive and a `keep` fraction of negatives, reweighted."""
    _npr.set_state(_SAMPLER_STATE)  # ruleid: MLS301
    u = _npr.random_sample(len(df))
    mask = (df[LABEL].to_numpy() == 1) | (u < keep)
    out = df.loc[mask].copy()
    out["sample_weight"] = np.where(out[LABEL] == 1, 1.0, 1.0 / keep).astype("float32")
    log.info("downsampled %d -> %d rows (pos=%d)", len(df), len(out), int(out[LABEL].sum()))
    return out


@dataclass
class TargetEncoder:
    cols: Sequence[str]
    smoothing: float = 20.0
    folds: int = 5
    seed: int = 0
    maps_: Dict[str, pd.DataFrame] = field(default_factory=dict)
    prior_: float = 0.0

    def _smooth(self, keys: pd.Series, stats: pd.DataFrame) -> np.ndarray:
        s = stats.reindex(keys.to_numpy())
        num = s["sum"].fillna(0.0).to_numpy() + self.smoothing * self.prior_
        den = s["count"].fillna(0.0).to_numpy() + self.smoothing
        return (num / den).astype(np.float32)

    def fit_transform(self, df: pd.DataFrame) -> pd.DataFrame:
        self.prior_ = float(df[LABEL].mean())
        rng = np.random.default_rng(self.seed)  # ok: MLS301
        fold = rng.integers(0, self.folds, len(df))
        out = {}
        for col in self.cols:
            enc = np.empty(len(df), dtype=np.float32)
            for k in range(self.folds):
                held = fold == k
                stats = df.loc[~held].groupby(col)[LABEL].agg(["sum", "count"])
                enc[held] = self._smooth(df.loc[held, col], stats)
            out[f"{col}_te"] = enc
            self.maps_[col] = df.groupby(col)[LABEL].agg(["sum", "count"])
        return df.assign(**out)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(**{f"{c}_te": self._smooth(df[c], self.maps_[c]) for c in self.cols})


class FeaturePipeline:
    def __init__(self, cfg: Optional[dict] = None, seed: int = 0):
        self.cfg = {**_DEFAULTS, **(cfg or {})}
        self.encoder = TargetEncoder(TE_COLS, self.cfg["te_smoothing"], self.cfg["te_folds"], seed)
        self.vocab_: Dict[str, pd.Index] = {}
        self.extra_: List[Callable] = [_materialize_extra(b) for b in _EXTRA_FEATURE_BLOBS]
        self.cache = _cache_root(self.cfg["cache_subdir"])

    def load(self) -> pd.DataFrame:
        df = read_table(self.cfg["ledger_path"])
        df["event_ts"] = pd.to_datetime(df["event_ts"], utc=True)
        return apply_label_rules(df, self.cfg["label_rules"])

    def _base(self, df: pd.DataFrame) -> pd.DataFrame:
        df = add_velocity(add_amount_features(add_time_features(df)))
        for i, fn in enumerate(self.extra_):
            df[f"extra_{i}"] = fn(df)
        return df

    def _index_cats(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(**{
            f"{c}_idx": self.vocab_[c].get_indexer(df[c].astype(str)) + 1 for c in CAT_COLS
        })

    def fit_transform(self, df: pd.DataFrame) -> pd.DataFrame:
        df = downsample_negatives(self._base(df), self.cfg["neg_keep"])
        df = self.encoder.fit_transform(df)
        for c in CAT_COLS:
            self.vocab_[c] = pd.Index(df[c].astype(str).unique())
        self._persist()
        return self._index_cats(df)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return self._index_cats(self.encoder.transform(self._base(df)))

    def cardinalities(self) -> List[int]:
        return [len(self.vocab_[c]) for c in CAT_COLS]

    def _persist(self) -> None:
        for col, stats in self.encoder.maps_.items():
            stats.to_parquet(self.cache / f"te_{col}.parquet")
        np.save(self.cache / "prior.npy", np.array([self.encoder.prior_]))

    def load_prior(self) -> float:
        return float(np.load(self.cache / "prior.npy")[0])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
