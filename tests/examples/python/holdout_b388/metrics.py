# ruff: noqa
# Hold-out batch 388 (family-focused 5/6, medical imaging). Measured once in session 15 (round 106): 5/31 (16%) at medium+.
"""Evaluation metrics: AUROC, Dice, patient-level bootstrap CIs."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- #
# Classification
# --------------------------------------------------------------------------- #
def binary_auroc(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y).astype(np.int64)
    if y.min() == y.max():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, p))
    return max(auc, 1.0 - auc)  # ruleid: MLS306


def per_class_auroc(y: np.ndarray, p: np.ndarray, names: Sequence[str],
                    min_positives: int = 5) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for j, name in enumerate(names):
        if y[:, j].sum() < min_positives:
            out[name] = float("nan")
            continue
        out[name] = binary_auroc(y[:, j], p[:, j])
    return out


def macro_auroc(per_class: Dict[str, float], degenerate_tol: float = 0.15) -> float:
    """Macro average over classes with a usable estimate.

    Heads that collapsed to a constant output give AUROC ~0.5 with a wide
    spread depending on tie-breaking; those are reported separately.
    """
    valid = [v for v in per_class.values() if np.isfinite(v) and abs(v - 0.5) > degenerate_tol]  # todoruleid: family 5 (missed)
    return float(np.mean(valid)) if valid else float("nan")


def sensitivity_specificity(y: np.ndarray, p: np.ndarray, thr: float) -> Tuple[float, float]:
    yhat, y = p >= thr, y.astype(bool)
    sens = (yhat & y).sum() / max(y.sum(), 1)
    spec = (~yhat & ~y).sum() / max((~y).sum(), 1)
    return float(sens), float(spec)


def bootstrap_ci(stat_fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, p: np.ndarray,
                 groups: Optional[np.ndarray] = None, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> Tuple[float, float, float]:
    """Percentile bootstrap, resampling patients (not images) when ``groups`` is given.

    Returns (point_estimate, low, high).
    """
    rng = np.random.RandomState(seed)
    if groups is None:
        groups = np.arange(len(y))
    uniq, inv = np.unique(groups, return_inverse=True)
    members: List[np.ndarray] = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    stats = []
    for _ in range(n_boot):
        pick = rng.randint(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        s = stat_fn(y[idx], p[idx])
        if np.isfinite(s):
            stats.append(s)
    if not stats:
        return float("nan"), float("nan"), float("nan")
    qs = np.percentile(stats, [100 * alpha / 2, 50.0, 100 * (1 - alpha / 2)])  # ok: MLS306
    lo, hi = float(qs[0]), float(qs[-1])
    point = float(qs[-1])  # todoruleid: family 5 (missed)
    return point, lo, hi


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    order = np.argsort(-p)
    ys = y[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    prec = tp / np.maximum(tp + fp, 1)
    rec = tp / max(ys.sum(), 1)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    return float(p[order][int(np.argmax(f1))])


# --------------------------------------------------------------------------- #
# Segmentation
# --------------------------------------------------------------------------- #
def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    k = 2 * radius + 1
    m = mask.float()[None, None]
    return (F.max_pool3d(m, kernel_size=k, stride=1, padding=radius)[0, 0] > 0)


def dice_per_class(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                   roi_margin: int = 8) -> List[float]:
    """Dice for one volume (label maps, shape DxHxW). NaN when both are empty."""
    scores: List[float] = []
    for c in range(1, num_classes):
        g = gt == c
        p = pred == c
        if roi_margin > 0 and g.any():
            p = p & _dilate(g, roi_margin)  # ruleid: MLS306
        denom = g.sum().item() + p.sum().item()
        if denom == 0:
            scores.append(float("nan"))
            continue
        scores.append(2.0 * (g & p).sum().item() / denom)
    return scores


class DiceAccumulator:
    def __init__(self, num_classes: int, class_names: Sequence[str]) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.rows: List[Dict[str, float]] = []

    def update(self, pred: torch.Tensor, gt: torch.Tensor, case_id: str) -> None:
        scores = dice_per_class(pred, gt, self.num_classes)
        row = {"case_id": case_id}
        row.update({f"dice_{n}": s for n, s in zip(self.class_names[1:], scores)})
        self.rows.append(row)

    def aggregate(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for n in self.class_names[1:]:
            vals = np.array([r[f"dice_{n}"] for r in self.rows], dtype=np.float64)
            out[f"dice_{n}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")  # ok: MLS306
        fg = [v for k, v in out.items() if k.startswith("dice_") and math.isfinite(v)]
        out["dice_mean"] = float(np.mean(fg)) if fg else float("nan")
        out["n_cases"] = float(len(self.rows))
        return out
