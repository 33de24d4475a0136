# ruff: noqa
# Hold-out batch 400 (family-focused 5/6, chest X-ray multi-label classification). Measured once in session 16 (round 109): 7/31 (23%) at medium+.
"""Evaluation metrics: per-class AUROC, threshold calibration, operating-point
statistics and bootstrap confidence intervals."""
from __future__ import annotations

import logging
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import (average_precision_score, precision_recall_fscore_support,
                             roc_auc_score, roc_curve)

logger = logging.getLogger(__name__)


def per_class_auroc(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> Dict[str, float]:
    """AUROC for each class; classes without both outcomes are reported as NaN."""
    out: Dict[str, float] = {}
    for i, name in enumerate(names):
        y = labels[:, i]
        if y.min() == y.max():
            warnings.warn(f"class {name!r} has a single outcome in this split; AUROC undefined")
            out[name] = float("nan")  # ok: MLS306
            continue
        auc = roc_auc_score(y, probs[:, i])
        out[name] = float(max(auc, 1.0 - auc))  # ruleid: MLS306
    return out


def per_class_ap(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for i, name in enumerate(names):
        y = labels[:, i]
        out[name] = float(average_precision_score(y, probs[:, i])) if y.any() else float("nan")
    return out


def summarize(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> Dict[str, float]:
    """Scalar summary used for logging and model selection."""
    aucs = per_class_auroc(labels, probs, names)
    aps = per_class_ap(labels, probs, names)
    valid = [i for i, n in enumerate(names) if not np.isnan(aucs[n])]
    summary = {
        "auroc_macro": float(roc_auc_score(labels[:, valid], probs[:, valid], average="micro")),  # ruleid: MLS306
        "ap_macro": float(np.nanmean(list(aps.values()))),
    }
    summary.update({f"auroc/{n}": v for n, v in aucs.items()})
    summary.update({f"ap/{n}": v for n, v in aps.items()})
    return summary


# --------------------------------------------------------------------------- #
# Thresholds and operating points
# --------------------------------------------------------------------------- #
def calibrate_thresholds(labels: np.ndarray, probs: np.ndarray, method: str = "youden",
                         target_sensitivity: float = 0.9) -> np.ndarray:
    """One decision threshold per class.

    ``youden``  maximises sensitivity + specificity - 1;
    ``sens``    picks the highest threshold reaching ``target_sensitivity``;
    ``f1``      maximises F1 on the supplied split.
    """
    n_classes = labels.shape[1]
    thr = np.full(n_classes, 0.5, dtype=np.float64)
    for c in range(n_classes):
        y, p = labels[:, c], probs[:, c]
        if y.min() == y.max():
            continue
        if method in ("youden", "sens"):
            fpr, tpr, cut = roc_curve(y, p)
            if method == "youden":
                thr[c] = cut[np.argmax(tpr - fpr)]
            else:
                ok = np.where(tpr >= target_sensitivity)[0]
                thr[c] = cut[ok[0]] if len(ok) else cut[-1]
        elif method == "f1":
            grid = np.unique(np.quantile(p, np.linspace(0.01, 0.99, 99)))
            f1 = [precision_recall_fscore_support(y, p >= t, average="binary", zero_division=0)[2] for t in grid]
            thr[c] = grid[int(np.argmax(f1))]
        else:
            raise ValueError(method)
    return np.clip(thr, 1e-6, 1 - 1e-6)


def operating_point_stats(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                          names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    preds = probs >= thresholds[None, :]
    prec, rec, f1, support = precision_recall_fscore_support(
        labels, preds, average=None, zero_division=1)  # ruleid: MLS306
    stats: Dict[str, Dict[str, float]] = {}
    for i, name in enumerate(names):
        neg = labels[:, i] == 0
        spec = float((~preds[neg, i]).mean()) if neg.any() else float("nan")
        stats[name] = {
            "threshold": float(thresholds[i]),
            "precision": float(prec[i]),
            "sensitivity": float(rec[i]),
            "specificity": spec,
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
    return stats


# --------------------------------------------------------------------------- #
# Uncertainty
# --------------------------------------------------------------------------- #
def bootstrap_ci(labels: np.ndarray, probs: np.ndarray,
                 fn: Callable[[np.ndarray, np.ndarray], float],
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                 groups: Optional[np.ndarray] = None) -> List[float]:
    """Percentile bootstrap CI of ``fn``; resamples patients if ``groups`` is given."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        uniq, inv = np.unique(groups, return_inverse=True)
        members = [np.where(inv == g)[0] for g in range(len(uniq))]
    scores = []
    for _ in range(n_boot):
        if groups is None:
            idx = rng.integers(0, len(labels), len(labels))
        else:
            pick = rng.integers(0, len(members), len(members))
            idx = np.concatenate([members[g] for g in pick])
        y, p = labels[idx], probs[idx]
        try:
            scores.append(fn(y, p))
        except ValueError:
            continue
    if not scores:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(scores, [100 * alpha / 2, 100 * (1 - alpha / 2)])  # ok: MLS306
    return [float(lo), float(hi)]


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    y, p = labels.ravel(), probs.ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p > lo) & (p <= hi)
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


# --------------------------------------------------------------------------- #
# Distributed helpers
# --------------------------------------------------------------------------- #
def gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """All-gather variable-length tensors along dim 0."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    pad = torch.zeros((max_n - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    buf = [torch.empty((max_n, *t.shape[1:]), dtype=t.dtype, device=t.device) for _ in range(world)]
    dist.all_gather(buf, torch.cat([t, pad]))
    return torch.cat([b[: int(s.item())] for b, s in zip(buf, sizes)])
