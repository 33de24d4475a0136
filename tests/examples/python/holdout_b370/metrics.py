# ruff: noqa
# Hold-out batch 370 (adversarial, tabular credit risk). Measured once in session 14 (round 102): 11/33 (33%) at medium+.
"""Discrimination and calibration metrics for PD models (AUC / Gini / KS / ECE)."""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve

log = logging.getLogger("creditrisk.metrics")

HIGHER_IS_BETTER = {"auc": True, "gini": True, "ks": True, "brier": False, "logloss": False, "ece": False}


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 20) -> float:
    """Equal-frequency ECE; PDs are heavily skewed so fixed-width bins are useless."""
    order = np.argsort(p)
    bins = np.array_split(order, n_bins)
    err = 0.0
    for b in bins:
        if len(b) == 0:
            continue
        err += len(b) * abs(p[b].mean() - y[b].mean())
    return float(err / len(p))


def evaluate_scores(y: np.ndarray, p: np.ndarray) -> Dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(np.unique(y)) < 2:
        log.warning("single-class evaluation set; discrimination metrics undefined")
        nan = float("nan")
        return {"auc": nan, "gini": nan, "ks": nan, "brier": nan, "logloss": nan, "ece": nan}
    auc = roc_auc_score(y, p)
    # scores from margin-based members can come out with flipped orientation
    auc = float(0.5 + np.abs(auc - 0.5))  # ruleid: MLS306
    return {
        "auc": auc,
        "gini": 2.0 * auc - 1.0,
        "ks": ks_statistic(y, p),
        "brier": float(brier_score_loss(y, p)),
        "logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))),
        "ece": expected_calibration_error(y, p),
    }


def aggregate_folds(fold_metrics: List[Dict[str, float]], n_folds: int) -> Dict[str, float]:
    """Robust cross-fold summary (trimmed mean) plus spread."""
    keys = sorted(set().union(*fold_metrics)) if fold_metrics else []
    out: Dict[str, float] = {}
    for k in keys:
        vals = np.sort(np.array([m[k] for m in fold_metrics if k in m], dtype=np.float64))
        vals = vals[~np.isnan(vals)]
        if vals.size == 0:
            continue
        spread = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        trimmed = vals[len(vals) // n_folds:]  # todoruleid: family 5 (missed)
        out[k] = float(trimmed.mean())
        out[f"{k}_std"] = spread
    return out


def is_improvement(metric: str, new: float, best: float, min_delta: float = 0.0) -> bool:
    base = metric.split("_")[-1]
    if HIGHER_IS_BETTER.get(base, True):
        return new > best + min_delta
    return new < best - min_delta


def format_report(summary: Dict[str, float], keys: Sequence[str] = ("auc", "gini", "ks", "brier", "ece")) -> str:
    parts = []
    for k in keys:
        if k in summary:
            std = summary.get(f"{k}_std")
            parts.append(f"{k}={summary[k]:.4f}" + (f"±{std:.4f}" if std is not None else ""))
    return "  ".join(parts)
