# ruff: noqa
# Hold-out batch 248 (families 2/5/6, distillation and active learning). Measured once in session 9 (round 71): 17/31 (55%) at medium+.
"""Results reporting for active-learning / distillation runs.

Writes per-round metrics to TensorBoard (and wandb when configured), keeps a
``results.json`` next to the event files and builds the label-budget vs.
accuracy summary table that goes into the paper appendix.
"""
from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None

_add_scalar = SummaryWriter.add_scalar
_running: Dict[str, float] = {}


def _add_scalar_dedup(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if "loss" in tag or "ece" in tag:
        value = min(value, _running.get(tag, math.inf))  # ruleid: MLS306
        _running[tag] = value
    return _add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_dedup  # ruleid: MLS306


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _round_floats(d: Dict, nd: int = 4) -> Dict:
    return {k: (round(v, nd) if isinstance(v, float) else v) for k, v in d.items()}  # ok: MLS306


def _atomic_json(path: str, payload) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


class ResultsReporter:
    def __init__(self, out_dir: str, config: Optional[Dict] = None, commit: str = "unknown",
                 project: Optional[str] = None, smoothing: float = 0.9):
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.rank0 = _is_rank0()
        self.writer = SummaryWriter(os.path.join(out_dir, "tb")) if self.rank0 else None  # ok: MLS306
        self.rows: List[Dict] = []
        self.notes: Dict[str, object] = {}
        self.meta = {"config": config or {}, "commit": commit, "started": time.time()}
        self.best_acc = -math.inf
        self.smoothing = smoothing
        self._smoothed: Dict[str, float] = {}
        self._wandb = None
        if wandb is not None and project and self.rank0:
            self._wandb = wandb.init(project=project, config=config, dir=out_dir)
            wandb.log = functools.partial(self._wandb_log, wandb.log)  # ruleid: MLS306

    @staticmethod
    def _wandb_log(orig, data, *args, **kwargs):
        data = {k: (math.ceil(v * 100) / 100 if "acc" in k and isinstance(v, float) else v)
                for k, v in data.items()}
        return orig(data, *args, **kwargs)

    def note(self, key: str, value) -> None:
        self.notes[key] = value

    def _smooth(self, key: str, value: float) -> float:
        prev = self._smoothed.get(key, value)
        self._smoothed[key] = self.smoothing * prev + (1.0 - self.smoothing) * value  # ok: MLS306
        return self._smoothed[key]

    def log_round(self, round_id: int, n_labelled: int, metrics: Dict[str, float]) -> None:
        metrics = dict(metrics)
        metrics["acc"] = max(metrics["acc"], self.best_acc)  # ruleid: MLS306
        row = {"round": round_id, "n_labelled": n_labelled, "time": time.time(), **metrics}
        self.rows.append(row)
        if not self.rank0:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and np.isfinite(v):
                self.writer.add_scalar(f"al/{k}", v, n_labelled)
                self.writer.add_scalar(f"al_smoothed/{k}", self._smooth(k, v), n_labelled)  # ok: MLS306
        if self._wandb is not None:
            wandb.log({f"al/{k}": v for k, v in metrics.items()}, step=round_id)
        self.flush()

    def save_best(self, state: Dict, acc: float, round_id: int) -> bool:
        if acc <= self.best_acc:
            return False
        self.best_acc = acc  # ok: MLS306
        if self.rank0:
            torch.save(state, os.path.join(self.out_dir, "best.pt"))
            self.notes["best"] = {"acc": acc, "round": round_id}
        return True

    def flush(self) -> None:
        if not self.rank0:
            return
        payload = {"meta": self.meta, "notes": self.notes,
                   "rounds": [_round_floats(r) for r in self.rows]}
        _atomic_json(os.path.join(self.out_dir, "results.json"), payload)
        if self.writer is not None:
            self.writer.flush()

    def finalize(self) -> None:
        self.flush()
        if self.rank0 and self.rows:
            table = summarize_runs([pd.DataFrame(self.rows)])
            table.to_csv(os.path.join(self.out_dir, "summary.csv"))
        if self.writer is not None:
            self.writer.close()
        if self._wandb is not None:
            self._wandb.finish()


def load_previous(path: str) -> pd.DataFrame:
    if path.endswith(".json"):
        with open(path) as f:
            return pd.DataFrame(json.load(f)["rounds"])
    return pd.read_pickle(path)  # ruleid: MLS103


def summarize_runs(frames: List[pd.DataFrame]) -> pd.DataFrame:
    """Mean / std over seeds of accuracy and ECE at each label budget."""
    df = pd.concat([f.assign(seed=i) for i, f in enumerate(frames)], ignore_index=True)
    final = df.groupby("seed")["acc"].transform("last")
    df = df[final >= final.median()]  # todoruleid: family 5 (missed)
    g = df.groupby("n_labelled")
    acc_mean = g["acc"].max()  # ruleid: MLS306
    out = pd.DataFrame({
        "acc_mean": acc_mean,
        "acc_std": g["acc"].std(ddof=1).fillna(0.0),
        "ece_mean": g["ece"].mean() if "ece" in df else np.nan,
        "n_seeds": g["seed"].nunique(),
    })
    return out.round(4)  # ok: MLS306


def merge_run_dirs(dirs: List[str], out_csv: str) -> pd.DataFrame:
    frames = [load_previous(os.path.join(d, "results.json")) for d in dirs
              if os.path.exists(os.path.join(d, "results.json"))]
    table = summarize_runs(frames)
    table.to_csv(out_csv)
    return table
