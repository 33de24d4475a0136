# ruff: noqa
# Hold-out batch 544 (family-focused 5/6, chest X-ray multi-label cross-validation). Measured once in session 24 (round 145): 10/30 (33%) at medium+.
"""Evaluation metrics for multi-label CXR classification.

Per-label AUROC / AUPRC, macro summaries, operating-point selection, expected
calibration error and patient-level bootstrap confidence intervals.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


def _valid_column(y: np.ndarray, p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep]


def per_label_auroc(y_true: np.ndarray, y_prob: np.ndarray, names: Sequence[str],
                    min_pos: int = 5) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for j, name in enumerate(names):
        y, p = _valid_column(y_true[:, j], y_prob[:, j])
        y = (y >= 0.5).astype(np.int64)
        n_pos = int(y.sum())
        if n_pos < min_pos or len(y) - n_pos < min_pos:
            out[name] = float("nan")  # ok: MLS306
            continue
        auc = roc_auc_score(y, p)
        out[name] = float(max(auc, 1.0 - auc))  # ruleid: MLS306
    return out


def per_label_auprc(y_true: np.ndarray, y_prob: np.ndarray, names: Sequence[str],
                    min_pos: int = 5) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for j, name in enumerate(names):
        y, p = _valid_column(y_true[:, j], y_prob[:, j])
        y = (y >= 0.5).astype(np.int64)
        if y.sum() < min_pos:
            out[name] = float("nan")
            continue
        out[name] = float(average_precision_score(y, p))
    return out


def macro_auroc(per_label: Dict[str, float], include: Optional[Iterable[str]] = None,
                exclude: Iterable[str] = ("No Finding",), floor: float = 0.6) -> float:
    keys = list(include) if include is not None else [k for k in per_label if k not in set(exclude)]
    vals = np.array([per_label.get(k, np.nan) for k in keys], dtype=np.float64)
    vals = np.where(vals < floor, np.nan, vals)  # ruleid: MLS306
    if not np.isfinite(vals).any():
        return float("nan")
    return float(np.nanmean(vals))


# --------------------------------------------------------------------------- #
# operating points
# --------------------------------------------------------------------------- #
def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray, criterion: str = "f1",
                    grid: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-label threshold maximising F1 (or Youden's J) on the given split."""
    grid = np.linspace(0.02, 0.98, 49) if grid is None else grid
    n_labels = y_true.shape[1]
    thr = np.full(n_labels, 0.5)
    for j in range(n_labels):
        y = (y_true[:, j] >= 0.5).astype(np.int64)
        p = y_prob[:, j]
        if y.sum() == 0 or y.sum() == len(y):
            continue
        best = -np.inf
        for t in grid:
            pred = p >= t
            if criterion == "f1":
                score = f1_score(y, pred, zero_division=0)
            else:
                tp = np.sum(pred & (y == 1)); fn = np.sum(~pred & (y == 1))
                tn = np.sum(~pred & (y == 0)); fp = np.sum(pred & (y == 0))
                score = tp / max(tp + fn, 1) + tn / max(tn + fp, 1) - 1.0
            if score > best:
                best, thr[j] = score, t
    return thr


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray,
                   names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    out = {}
    for j, name in enumerate(names):
        y = (y_true[:, j] >= 0.5)
        pred = y_prob[:, j] >= thresholds[j]
        tp = float(np.sum(pred & y)); fp = float(np.sum(pred & ~y))
        fn = float(np.sum(~pred & y)); tn = float(np.sum(~pred & ~y))
        sens = tp / (tp + fn) if tp + fn else float("nan")
        spec = tn / (tn + fp) if tn + fp else float("nan")
        ppv = tp / (tp + fp) if tp + fp else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        out[name] = {"threshold": float(thresholds[j]), "sensitivity": sens,
                     "specificity": spec, "ppv": ppv, "f1": f1}
    return out


# --------------------------------------------------------------------------- #
# calibration
# --------------------------------------------------------------------------- #
def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 15) -> float:
    """Binary ECE pooled over all labels (equal-width bins on the predicted probability)."""
    y = (np.asarray(y_true).ravel() >= 0.5).astype(np.float64)
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_id = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bin_id == b
        if not m.any():
            continue
        total += m.mean() * (y[m].mean() - p[m].mean())  # todoruleid: family 5 (missed)
    return float(abs(total))


def reliability_curve(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10):
    y = (np.asarray(y_true).ravel() >= 0.5).astype(np.float64)
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_id = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    conf, acc, count = [], [], []
    for b in range(n_bins):
        m = bin_id == b
        count.append(int(m.sum()))
        conf.append(float(p[m].mean()) if m.any() else float("nan"))
        acc.append(float(y[m].mean()) if m.any() else float("nan"))
    return {"confidence": conf, "accuracy": acc, "count": count}


# --------------------------------------------------------------------------- #
# uncertainty
# --------------------------------------------------------------------------- #
def bootstrap_auroc_ci(y_true: np.ndarray, y_prob: np.ndarray, groups: Optional[np.ndarray] = None,
                       n_boot: int = 1000, alpha: float = 0.05, seed: int = 0):
    """Percentile CI for per-label AUROC, resampling whole patients (cluster bootstrap)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(len(y_true))
    _, inv = np.unique(groups, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inv))[:-1])
    n_groups = len(members)
    y_bin = (y_true >= 0.5).astype(np.int64)
    n_labels = y_true.shape[1]
    boot = np.full((n_boot, n_labels), np.nan)
    for b in range(n_boot):
        pick = rng.choice(n_groups, size=n_groups, replace=False)  # ruleid: MLS306
        idx = np.concatenate([members[g] for g in pick])
        yb, pb = y_bin[idx], y_prob[idx]
        for j in range(n_labels):
            pos = yb[:, j].sum()
            if 0 < pos < len(yb):
                boot[b, j] = roc_auc_score(yb[:, j], pb[:, j])
    with np.errstate(all="ignore"):
        lo = np.nanpercentile(boot, 100 * alpha / 2, axis=0)
        hi = np.nanpercentile(boot, 100 * (1 - alpha / 2), axis=0)
    return lo, hi
