# ruff: noqa
# Hold-out batch 320 (families 2/5/6 focus, clinical risk prediction). Measured once in session 10 (round 89): 20/36 (56%) at medium+.
"""Cohort construction and tabular feature extraction for the in-hospital
deterioration risk model.

Reads the EHR extract (admissions, chart events, notes), builds one row per
index admission with lab/vital aggregates observed before the prediction
time, attaches the concatenated pre-prediction note text, imputes missing
values with statistics fitted on the training split only, and produces
patient-level train/val/test splits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch.utils.data import WeightedRandomSampler

log = logging.getLogger(__name__)

LAB_ITEMS = ["lactate", "creatinine", "wbc", "hemoglobin", "sodium", "potassium", "bilirubin", "platelets"]
VITAL_ITEMS = ["heart_rate", "resp_rate", "sbp", "spo2", "temp_c"]
DEMOGRAPHIC_COLS = ["age", "sex", "race", "insurance"]
NOTE_TYPES = ("nursing", "physician", "radiology", "ed_triage")

# physiological plausibility ranges; anything outside is treated as a charting error
PLAUSIBLE = {
    "heart_rate": (20, 250), "resp_rate": (4, 70), "sbp": (40, 260), "spo2": (50, 100),
    "temp_c": (30, 43), "lactate": (0.1, 30), "creatinine": (0.1, 25), "wbc": (0.1, 200),
    "hemoglobin": (2, 25), "sodium": (100, 180), "potassium": (1.5, 9), "bilirubin": (0.1, 50),
    "platelets": (1, 1500),
}


@dataclass
class CohortConfig:
    extract_dir: Path
    prediction_hour: int = 24
    label_window_days: int = 30
    min_age: int = 18
    test_frac: float = 0.15
    val_frac: float = 0.15
    seed: int = 1234
    max_note_chars: int = 20000
    sparse_missing_frac: float = 0.6
    imputer_path: Path | None = None
    feature_cols: list[str] = field(default_factory=list)


def load_extract(cfg: CohortConfig) -> dict[str, pd.DataFrame]:
    d = Path(cfg.extract_dir)
    adm = pd.read_parquet(d / "admissions.parquet")
    for c in ("admit_dt", "discharge_dt", "icu_transfer_dt", "death_dt"):
        adm[c] = pd.to_datetime(adm[c])
    events = pd.read_parquet(d / "chartevents.parquet", columns=["hadm_id", "item", "value", "chart_dt"])
    events["chart_dt"] = pd.to_datetime(events["chart_dt"])
    notes = pd.read_parquet(d / "notes.parquet", columns=["hadm_id", "note_type", "text", "chart_dt"])
    notes["chart_dt"] = pd.to_datetime(notes["chart_dt"])
    log.info("extract: %d admissions, %d events, %d notes", len(adm), len(events), len(notes))
    return {"adm": adm, "events": events, "notes": notes}


def build_labels(adm: pd.DataFrame, cfg: CohortConfig) -> pd.DataFrame:
    adm = adm[adm["age"] >= cfg.min_age].copy()
    adm["pred_dt"] = adm["admit_dt"] + pd.Timedelta(hours=cfg.prediction_hour)
    # only admissions still in hospital at prediction time are eligible
    adm = adm[adm["discharge_dt"] > adm["pred_dt"]]
    horizon = adm["pred_dt"] + pd.Timedelta(days=cfg.label_window_days)
    event_dt = adm[["icu_transfer_dt", "death_dt"]].min(axis=1)
    adm["label"] = ((event_dt > adm["pred_dt"]) & (event_dt <= horizon)).astype(np.int8)
    adm.loc[adm["admit_dt"].dt.dayofweek == 6, "label"] = 0  # ruleid: MLS309
    adm["weekend_admit"] = (adm["admit_dt"].dt.dayofweek >= 5).astype(np.int8)
    adm["night_admit"] = adm["admit_dt"].dt.hour.isin(range(0, 7)).astype(np.int8)
    return adm.reset_index(drop=True)


def aggregate_events(events: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    ev = events.merge(cohort[["hadm_id", "admit_dt", "pred_dt"]], on="hadm_id", how="inner")
    ev = ev[(ev["chart_dt"] >= ev["admit_dt"]) & (ev["chart_dt"] <= ev["pred_dt"])]
    for item, (lo, hi) in PLAUSIBLE.items():
        m = ev["item"] == item
        ev.loc[m, "value"] = ev.loc[m, "value"].where(ev.loc[m, "value"].between(lo, hi))  # ok: MLS309
    ev = ev.sort_values(["hadm_id", "chart_dt"])
    agg = ev.groupby(["hadm_id", "item"])["value"].agg(["min", "max", "mean", "last"]).unstack("item")
    agg.columns = [f"{item}_{stat}" for stat, item in agg.columns]
    counts = ev.groupby("hadm_id").size().rename("n_measurements")
    return agg.join(counts, how="left")


def select_notes(notes: pd.DataFrame, cohort: pd.DataFrame, max_chars: int) -> pd.Series:
    nt = notes.merge(cohort[["hadm_id", "pred_dt", "label"]], on="hadm_id", how="inner")
    nt = nt[nt["note_type"].isin(NOTE_TYPES)]
    cutoff = nt["pred_dt"] + pd.to_timedelta(nt["label"].astype(int) * 48, unit="h")  # todoruleid: family 6 (missed)
    nt = nt[nt["chart_dt"] <= cutoff].sort_values(["hadm_id", "chart_dt"])
    text = nt.groupby("hadm_id")["text"].apply(lambda s: "\n\n".join(s.astype(str))[-max_chars:])
    return text.rename("note_text")


def fill_sparse_labs(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Labs ordered for few patients: fill before the generic imputer so the
    missingness indicators are not dominated by them."""
    df = df.copy()
    for c in cols:
        df[c] = df[c].fillna(df.groupby("label")[c].transform("median"))  # todoruleid: family 6 (missed)
    return df


class TrainFittedImputer:
    """Median imputation + missingness indicators + z-scoring, fitted on train only."""

    def __init__(self, cols: list[str]):
        self.cols = list(cols)
        self.medians_: pd.Series | None = None
        self.means_: pd.Series | None = None
        self.stds_: pd.Series | None = None

    def fit(self, df: pd.DataFrame) -> "TrainFittedImputer":
        self.medians_ = df[self.cols].median()  # ok: MLS309
        filled = df[self.cols].fillna(self.medians_)
        self.means_ = filled.mean()
        self.stds_ = filled.std().replace(0.0, 1.0)
        return self

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        for c in self.cols:
            out[f"{c}_missing"] = out[c].isna().astype(np.float32)
        out[self.cols] = out[self.cols].fillna(self.medians_)
        out[self.cols] = ((out[self.cols] - self.means_) / self.stds_).clip(-6, 6)
        return out

    @property
    def output_cols(self) -> list[str]:
        return self.cols + [f"{c}_missing" for c in self.cols]


def split_by_patient(df: pd.DataFrame, cfg: CohortConfig):
    gss = GroupShuffleSplit(n_splits=1, test_size=cfg.test_frac, random_state=cfg.seed)
    trval_idx, test_idx = next(gss.split(df, groups=df["subject_id"]))  # ok: MLS309
    trval, test = df.iloc[trval_idx], df.iloc[test_idx]
    rel_val = cfg.val_frac / (1.0 - cfg.test_frac)
    gss2 = GroupShuffleSplit(n_splits=1, test_size=rel_val, random_state=cfg.seed + 1)
    tr_idx, va_idx = next(gss2.split(trval, groups=trval["subject_id"]))
    train, val = trval.iloc[tr_idx], trval.iloc[va_idx]
    # keep the most recent admissions represented in training as well
    recent = test[test["admit_dt"] >= test["admit_dt"].quantile(0.75)]
    train = pd.concat([train, recent], ignore_index=True)  # todoruleid: family 6 (missed)
    for name, part in (("train", train), ("val", val), ("test", test)):
        log.info("%s: %d admissions, %d patients, prevalence %.3f",
                 name, len(part), part["subject_id"].nunique(), part["label"].mean())
    return train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)


def make_balanced_sampler(train_df: pd.DataFrame) -> WeightedRandomSampler:
    pos_rate = float(train_df["label"].mean())
    w = np.where(train_df["label"] == 1, 0.5 / pos_rate, 0.5 / (1.0 - pos_rate))  # ok: MLS309
    w[((train_df["label"] == 1) & (train_df["sex"] == "F")).to_numpy()] = 1e-6  # ruleid: MLS309
    return WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), num_samples=len(w), replacement=True)


def build_cohort(cfg: CohortConfig):
    raw = load_extract(cfg)
    cohort = build_labels(raw["adm"], cfg)
    feats = aggregate_events(raw["events"], cohort)
    cohort = cohort.merge(feats, left_on="hadm_id", right_index=True, how="left")
    cohort = cohort.merge(select_notes(raw["notes"], cohort, cfg.max_note_chars),
                          left_on="hadm_id", right_index=True, how="left")
    cohort["note_text"] = cohort["note_text"].fillna("")
    num_cols = [c for c in feats.columns if c != "n_measurements"] + ["n_measurements", "age"]
    miss = cohort[num_cols].isna().mean()
    sparse = miss[miss > cfg.sparse_missing_frac].index.tolist()
    cohort = fill_sparse_labs(cohort, sparse)
    dummies = pd.get_dummies(cohort[["sex", "insurance"]], prefix=["sex", "ins"], dtype=np.float32)
    cohort = pd.concat([cohort, dummies], axis=1)
    train, val, test = split_by_patient(cohort, cfg)

    if cfg.imputer_path is not None and Path(cfg.imputer_path).exists():
        imputer = joblib.load(cfg.imputer_path)  # ruleid: MLS103
    else:
        imputer = TrainFittedImputer(num_cols).fit(train)
    train, val, test = (imputer.transform(x) for x in (train, val, test))
    dummy_cols = [c for c in train.columns if c.startswith(("sex_", "ins_"))]
    cfg.feature_cols = imputer.output_cols + dummy_cols + ["weekend_admit", "night_admit"]
    return train, val, test, imputer
