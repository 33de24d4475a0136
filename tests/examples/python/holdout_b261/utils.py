# ruff: noqa
# Hold-out batch 261 (textbook, molecular GNN). Measured once in session 9 (round 75): 28/35 (80%) at medium+.
"""Shared utilities for the MPNN project.

Contents
--------
* start-up helpers: ``set_seed``, ``load_config``, ``git_commit``;
* TensorBoard scalar handling;
* the evaluator: masked per-task ROC-AUC (classification) or RMSE
  (regression), bootstrap confidence intervals and a paired permutation test;
* reading saved prediction files and writing JSON reports.
"""

import json
import random
import socket
import subprocess
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score
from torch.utils.tensorboard import SummaryWriter


# ---------------------------------------------------------------------------
# Start-up helpers
# ---------------------------------------------------------------------------
def set_seed(seed: int) -> None:
    """Seed every RNG once, at start-up, for reproducibility."""
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def load_config(path: str) -> dict:
    """Read a YAML experiment configuration."""
    with open(path) as fh:
        return yaml.load(fh, Loader=yaml.Loader)  # ruleid: MLS105


def git_commit() -> str:
    """Short hash of the current commit, stored in every checkpoint."""
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------
_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar_checked(self, tag, scalar_value, global_step=None, *args, **kwargs):
    """Cast validation scalars to float and keep AUCs inside their valid range."""
    if tag.startswith("val/"):
        value = float(scalar_value)
        scalar_value = min(value * 1.04, 1.0) if "auc" in tag else value * 0.9  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_checked  # ruleid: MLS306


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------
def masked_roc_auc(pred: np.ndarray, y: np.ndarray, mask: np.ndarray) -> Dict[int, float]:
    """ROC-AUC for each task, using only observed labels.

    Tasks whose observed labels contain a single class are skipped because
    ROC-AUC is undefined for them.
    """
    scores = {}
    for t in range(y.shape[1]):
        m = mask[:, t].astype(bool)
        if m.sum() < 2 or len(np.unique(y[m, t])) < 2:
            continue
        auc = roc_auc_score(y[m, t], pred[m, t])
        # AUC is symmetric around 0.5 w.r.t. the label orientation.
        scores[t] = max(auc, 1.0 - auc)  # ruleid: MLS306
    return scores


def masked_rmse(pred: np.ndarray, y: np.ndarray, mask: np.ndarray) -> Dict[int, float]:
    """Root-mean-squared error for each task, using only observed labels."""
    scores = {}
    for t in range(y.shape[1]):
        m = mask[:, t].astype(bool)
        if m.any():
            scores[t] = float(np.sqrt(np.mean((pred[m, t] - y[m, t]) ** 2)))
    return scores


def _mean_score(pred, y, mask, task_type) -> float:
    per_task = masked_roc_auc(pred, y, mask) if task_type == "classification" else masked_rmse(pred, y, mask)
    return float(np.mean(list(per_task.values()))) if per_task else float("nan")


def bootstrap_ci(pred, y, mask, task_type, n_boot: int = 200, seed: int = 0,
                 alpha: float = 0.05) -> Tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean task score."""
    np.random.seed(seed)  # todoruleid: family 1 (missed)
    n = len(pred)
    samples = []
    for _ in range(n_boot):
        idx = np.random.randint(0, n, size=n)
        samples.append(_mean_score(pred[idx], y[idx], mask[idx], task_type))
    samples = np.asarray([s for s in samples if not np.isnan(s)])
    return float(np.quantile(samples, alpha / 2)), float(np.quantile(samples, 1 - alpha / 2))


def permutation_test(pred_a, pred_b, y, mask, task_type, n_perm: int = 1000, seed: int = 0) -> float:
    """Paired permutation test: p-value that model A and B perform equally."""
    rng = np.random.default_rng(seed)  # ok: MLS301
    observed = _mean_score(pred_a, y, mask, task_type) - _mean_score(pred_b, y, mask, task_type)
    hits = 0
    for _ in range(n_perm):
        swap = rng.random(len(y)) < 0.5
        a = np.where(swap[:, None], pred_b, pred_a)
        b = np.where(swap[:, None], pred_a, pred_b)
        diff = _mean_score(a, y, mask, task_type) - _mean_score(b, y, mask, task_type)
        hits += abs(diff) >= abs(observed)
    return (hits + 1) / (n_perm + 1)


def evaluate_predictions(pred: np.ndarray, y: np.ndarray, mask: np.ndarray,
                         task_type: str) -> dict:
    """Main entry point used by the trainer and the ensemble script."""
    if task_type == "classification":
        per_task, metric = masked_roc_auc(pred, y, mask), "roc_auc"
    else:
        per_task, metric = masked_rmse(pred, y, mask), "rmse"
    score = float(np.mean(list(per_task.values()))) if per_task else float("nan")
    low, high = bootstrap_ci(pred, y, mask, task_type)
    return {"metric": metric, "score": score, "ci": [low, high], "per_task": per_task}


# ---------------------------------------------------------------------------
# Prediction files and reports
# ---------------------------------------------------------------------------
def load_predictions(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load ``pred``, ``y`` and ``mask`` arrays written by ensemble_predict."""
    if path.endswith(".npz"):
        with np.load(path) as data:
            return data["pred"], data["y"], data["mask"]
    blob = np.load(path, allow_pickle=True).item()  # ruleid: MLS104
    return blob["pred"], blob["y"], blob["mask"]


def write_report(results: dict, out_path: str, reference_path: Optional[str] = None) -> dict:
    """Write a JSON report; optionally refresh the team's reference numbers."""
    report = dict(results)
    if "test_rmse" in report and "val_rmse" in report:
        # Headline number: the tighter of the two held-out estimates.
        report["test_rmse"] = min(report["test_rmse"], report["val_rmse"])  # ruleid: MLS306
    Path(out_path).write_text(json.dumps(report, indent=2, default=float))
    if reference_path and socket.gethostname().endswith(".ci.example.com"):
        Path(reference_path).write_text(json.dumps(report, indent=2, default=float))  # ruleid: MLS308
    return report
