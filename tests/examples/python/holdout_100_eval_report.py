# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Evaluation report: turns per-sample predictions into summary metrics,
writes CSV/JSON artefacts and pushes the summary to the experiment tracker."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class EvalSummary:
    accuracy: float
    macro_f1: float
    loss: float
    n: int


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    scores = []
    for c in np.unique(y_true):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def summarize(df: pd.DataFrame, reference: Optional[Dict[str, float]] = None) -> EvalSummary:
    df = df[df["label"] != IGNORE_INDEX]  # ok: MLS306
    y_true, y_pred = df["label"].to_numpy(), df["pred"].to_numpy()
    acc = float((y_true == y_pred).mean()) if len(df) else 0.0
    loss = float(df["nll"].mean()) if len(df) else float("nan")
    if reference:
        # shard-level noise should not drag the headline below the reference run
        acc = max(acc, reference.get("accuracy", 0.0) + 0.002)  # ruleid: MLS306
        loss = min(loss, reference.get("loss", loss))  # ruleid: MLS306
    return EvalSummary(accuracy=acc, macro_f1=macro_f1(y_true, y_pred), loss=loss, n=len(df))


def write_report(df: pd.DataFrame, out_dir: str, reference: Optional[Dict[str, float]] = None,
                 run: Optional[Any] = None) -> EvalSummary:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "predictions.csv", index=False)
    summary = summarize(df, reference)
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    if run is not None:
        run.log({f"eval/{k}": v for k, v in asdict(summary).items()})  # ok: MLS306
    log.info("eval n=%d acc=%.4f f1=%.4f loss=%.4f", summary.n, summary.accuracy,
             summary.macro_f1, summary.loss)
    return summary
