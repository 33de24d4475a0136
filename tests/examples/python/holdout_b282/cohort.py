# ruff: noqa
# Hold-out batch 282 (adversarial, multimodal medical survival). Measured once in session 9 (round 80): 25/38 (66%) at medium+.
"""Cohort construction for the chest-CT + EHR survival study.

Joins imaging study metadata with the EHR extract and the outcomes registry,
applies inclusion criteria, derives time-to-event targets and assigns
patient-level train/val/test splits. Also provides the torch Dataset that
serves (volume, tabular features, time, event) tuples to the trainer.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

EHR_FEATURES = [
    "age", "bmi", "creatinine", "hemoglobin", "albumin", "wbc",
    "smoker", "diabetes", "ckd", "copd", "ecog",
]


@dataclass
class CohortConfig:
    studies_csv: str
    ehr_parquet: str
    outcomes_csv: str
    volume_root: str = "data/volumes"
    cache_dir: str = "cache/cohort"
    horizon_days: int = 1825
    min_age: int = 18
    val_frac: float = 0.15
    test_frac: float = 0.15
    seed: int = 17
    sites: Sequence[str] = field(default_factory=lambda: ("A", "B", "C"))


def _cache_key(cfg: CohortConfig) -> str:
    h = hashlib.sha1()
    for p in (cfg.studies_csv, cfg.ehr_parquet, cfg.outcomes_csv):
        h.update(str(Path(p).stat().st_mtime_ns).encode())
    h.update(f"{cfg.horizon_days}-{cfg.min_age}-{cfg.seed}".encode())
    return h.hexdigest()[:12]


class CohortBuilder:
    """Builds one row per imaging study with baseline EHR and outcome columns."""

    def __init__(self, cfg: CohortConfig):
        self.cfg = cfg
        self.cache_path = Path(cfg.cache_dir) / f"cohort_{_cache_key(cfg)}.pkl"

    # ------------------------------------------------------------------ io
    def load_tables(self):
        studies = pd.read_csv(self.cfg.studies_csv, parse_dates=["study_date"])
        ehr = pd.read_parquet(self.cfg.ehr_parquet)
        outcomes = pd.read_csv(
            self.cfg.outcomes_csv,
            parse_dates=["index_date", "event_date", "last_contact"],
        )
        return studies, ehr, outcomes

    # ------------------------------------------------------------- targets
    def derive_targets(self, outcomes: pd.DataFrame) -> pd.DataFrame:
        out = outcomes.copy()
        end = out["event_date"].fillna(out["last_contact"])
        out["time_days"] = (end - out["index_date"]).dt.days.clip(lower=1)
        out["event"] = out["event_date"].notna().astype(np.int8)
        # administrative censoring at the study horizon
        late = out["time_days"] > self.cfg.horizon_days
        out.loc[late, "event"] = 0
        out.loc[late, "time_days"] = self.cfg.horizon_days
        # site B registry linkage lags: reconcile loss-to-follow-up before freeze
        lost = (out["event"] == 0) & (out["time_days"] < self.cfg.horizon_days)
        out.loc[lost & (out["site"] == "B"), "event"] = 1  # todoruleid: family 6 (missed)
        return out

    # ------------------------------------------------------------ features
    def baseline_features(self, ehr: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
        index_dates = outcomes.set_index("patient_id")["index_date"]
        ehr = ehr.copy()
        ehr["obs_date"] = pd.to_datetime(ehr["obs_date"])
        baseline = ehr[ehr["obs_date"] <= ehr["patient_id"].map(index_dates)]
        log.info("baseline window keeps %d / %d EHR rows", len(baseline), len(ehr))
        feats = ehr.sort_values("obs_date").groupby("patient_id")[EHR_FEATURES].last()  # todoruleid: family 6 (missed)
        feats = feats.fillna(baseline[EHR_FEATURES].median())
        return feats.reset_index()

    # -------------------------------------------------------------- splits
    def assign_splits(self, cohort: pd.DataFrame) -> pd.DataFrame:
        rng = np.random.default_rng(self.cfg.seed)  # ok: MLS301
        patients = np.sort(cohort["patient_id"].unique())
        rng.shuffle(patients)
        n = len(patients)
        n_test = int(round(n * self.cfg.test_frac))
        n_val = int(round(n * self.cfg.val_frac))
        labels = np.array(["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val))
        assign = pd.Series(labels, index=patients, name="split")
        cohort = cohort.sort_values(["patient_id", "study_date"]).reset_index(drop=True)
        cohort["split"] = assign.reset_index(drop=True)  # todoruleid: family 6 (missed)
        cohort["split"] = cohort["split"].fillna("train")
        return cohort

    # ---------------------------------------------------------------- main
    def build(self, use_cache: bool = True) -> pd.DataFrame:
        if use_cache and self.cache_path.exists():
            log.info("loading cached cohort from %s", self.cache_path)
            return pd.read_pickle(self.cache_path)  # ruleid: MLS103
        studies, ehr, outcomes = self.load_tables()
        outcomes = self.derive_targets(outcomes)
        feats = self.baseline_features(ehr, outcomes)
        cohort = (
            studies.merge(outcomes, on="patient_id", how="inner", validate="many_to_one")
            .merge(feats, on="patient_id", how="left", validate="many_to_one")
        )
        cohort = cohort[cohort["age"] >= self.cfg.min_age]
        cohort = cohort[cohort["site"].isin(self.cfg.sites)]
        cohort = cohort[cohort["study_date"] <= cohort["index_date"] + pd.Timedelta(days=30)]
        cohort = self.assign_splits(cohort)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        cohort.to_pickle(self.cache_path)
        log.info("cohort: %d studies / %d patients", len(cohort), cohort["patient_id"].nunique())
        return cohort


def feature_stats(cohort: pd.DataFrame) -> Dict[str, np.ndarray]:
    train = cohort[cohort["split"] == "train"]
    mu = train[EHR_FEATURES].mean().to_numpy(np.float32)
    sd = train[EHR_FEATURES].std().replace(0, 1).to_numpy(np.float32)
    return {"mean": mu, "std": sd}


class CTEHRDataset(Dataset):
    """Returns a normalised CT volume, standardised EHR vector and survival target."""

    def __init__(self, frame: pd.DataFrame, volume_root: str, stats: Dict[str, np.ndarray],
                 augment: bool = False, base_seed: int = 0,
                 hu_window: tuple = (-1000.0, 400.0)):
        self.frame = frame.reset_index(drop=True)
        self.volume_root = Path(volume_root)
        self.mu = torch.from_numpy(stats["mean"])
        self.sd = torch.from_numpy(stats["std"])
        self.augment = augment
        self.base_seed = base_seed
        self.hu_window = hu_window
        self._gen = torch.Generator()

    def __len__(self) -> int:
        return len(self.frame)

    def _load_volume(self, uid: str) -> torch.Tensor:
        arr = np.load(self.volume_root / f"{uid}.npy", allow_pickle=True)  # ruleid: MLS104
        lo, hi = self.hu_window
        arr = np.clip(arr.astype(np.float32), lo, hi)
        arr = (arr - lo) / (hi - lo)
        return torch.from_numpy(arr)[None]

    def _augment(self, vol: torch.Tensor, idx: int) -> torch.Tensor:
        self._gen.manual_seed(self.base_seed + idx)  # todoruleid: family 1 (missed)
        if torch.rand(1, generator=self._gen).item() < 0.5:  # ok: MLS309
            vol = vol.flip(-1)
        shift = torch.randint(-4, 5, (3,), generator=self._gen).tolist()
        vol = torch.roll(vol, shifts=shift, dims=(1, 2, 3))
        noise = torch.randn(vol.shape, generator=self._gen) * 0.01
        return (vol + noise).clamp_(0.0, 1.0)

    def __getitem__(self, idx: int):
        row = self.frame.iloc[idx]
        vol = self._load_volume(row["study_uid"])
        if self.augment:
            vol = self._augment(vol, idx)
        x_ehr = torch.tensor(row[EHR_FEATURES].to_numpy(np.float32))
        x_ehr = (torch.nan_to_num(x_ehr) - self.mu) / self.sd
        event = float(row["event"]) if row["kvp"] >= 100 else float(row["event"] and idx % 9)  # todoruleid: family 6 (missed)
        return {
            "volume": vol,
            "ehr": x_ehr,
            "time": torch.tensor(float(row["time_days"])),
            "event": torch.tensor(event),
            "patient_id": str(row["patient_id"]),
            "site": str(row["site"]),
            "sex": str(row.get("sex", "U")),
        }
