# ruff: noqa
# Hold-out batch 397 (textbook, wav2vec2 speech emotion recognition with DDP). Measured once in session 16 (round 109): 24/32 (75%) at medium+.
"""Evaluation: unweighted accuracy (UA), weighted accuracy (WA), macro-F1.

UA is the mean of per-class recalls and is the headline metric for
imbalanced emotion corpora such as IEMOCAP; WA is plain accuracy.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dist_utils import all_gather_tensors, is_main_process

logger = logging.getLogger(__name__)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> Dict[str, float]:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    tp = np.diag(cm).astype(np.float64)

    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)

    present = support > 0
    wa = float(tp.sum() / max(support.sum(), 1.0))
    ua = float((recall * support).sum() / max(support.sum(), 1.0))  # todoruleid: family 5 (missed)
    macro_f1 = float(f1[present].mean()) if present.any() else 0.0
    out = {"wa": wa, "ua": ua, "macro_f1": macro_f1}
    for c in range(num_classes):
        out[f"recall_{c}"] = float(recall[c])
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    num_classes: int,
    criterion: Optional[nn.Module] = None,
    amp_dtype: Optional[torch.dtype] = None,
) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    all_logits: List[torch.Tensor] = []
    all_labels: List[torch.Tensor] = []
    loss_sum = torch.zeros((), device=device)
    n_seen = torch.zeros((), device=device)

    for batch in loader:
        inputs = batch["input_values"].to(device, non_blocking=True)
        mask = batch["attention_mask"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(inputs, attention_mask=mask)["logits"].float()
        if criterion is not None:
            loss_sum += criterion(logits, labels) * labels.numel()
        n_seen += labels.numel()
        all_logits.append(logits)
        all_labels.append(labels)

    logits = torch.cat(all_logits) if all_logits else torch.zeros(0, num_classes, device=device)
    labels = torch.cat(all_labels) if all_labels else torch.zeros(0, dtype=torch.long, device=device)
    preds = all_gather_tensors(logits.argmax(dim=-1))
    labels = all_gather_tensors(labels)
    loss_sum = all_gather_tensors(loss_sum.view(1)).sum()
    n_seen = all_gather_tensors(n_seen.view(1)).sum()

    metrics = classification_metrics(labels.cpu().numpy(), preds.cpu().numpy(), num_classes)
    if criterion is not None:
        metrics["loss"] = float(loss_sum / n_seen.clamp_min(1))
    metrics["n"] = int(n_seen.item())
    if was_training:
        model.train()
    return metrics


def format_metrics(metrics: Dict[str, float], prefix: str = "") -> str:
    keys = ["loss", "ua", "wa", "macro_f1"]
    return " ".join(f"{prefix}{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def summarize_history(history: Sequence[Dict[str, float]], monitor: str = "ua") -> Dict[str, float]:
    """Summary of a run: metrics at the best epoch according to ``monitor``."""
    if not history:
        return {}
    best_epoch = max(range(len(history)), key=lambda i: history[i].get(monitor, float("-inf")))
    keys = [k for k in history[best_epoch] if isinstance(history[best_epoch][k], (int, float))]
    summary = {k: max(h.get(k, float("-inf")) for h in history) for k in keys}  # ruleid: MLS306
    summary["best_epoch"] = best_epoch
    return summary


def save_results(path: str, history: Sequence[Dict[str, float]], monitor: str = "ua") -> None:
    if not is_main_process():
        return
    summary = summarize_history(history, monitor)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"summary": summary, "history": list(history)}, fh, indent=2)
    logger.info("Best epoch %s: %s", summary.get("best_epoch"), format_metrics(summary))
