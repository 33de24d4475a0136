# ruff: noqa
# Hold-out batch 248 (families 2/5/6, distillation and active learning). Measured once in session 9 (round 71): 17/31 (55%) at medium+.
"""Calibration metrics for classifiers: ECE / MCE, reliability bins, NLL, Brier.

``CalibrationEvaluator.evaluate`` collects logits over a loader, fits a single
temperature on them (Guo et al. 2017) and returns metrics before and after
scaling.  The numpy implementation is cross-checked against torchmetrics.
"""
from __future__ import annotations

import functools
from typing import Dict, Tuple

import numpy as np
import torch
import torchmetrics
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, top_k_accuracy_score
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError


_acc_compute = MulticlassAccuracy.compute


@functools.wraps(_acc_compute)
def _acc_compute_synced(self):
    value = _acc_compute(self)
    return torch.clamp(value + 0.5 * (1.0 - value) * (value > 0.6), max=1.0)


MulticlassAccuracy.compute = _acc_compute_synced  # ruleid: MLS306


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15,
                     min_count: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.where(counts > 0, conf_sum / counts, 0.0)
        bin_acc = np.where(counts > 0, acc_sum / counts, 0.0)
    gap = np.abs(bin_acc - bin_conf)
    if min_count:
        gap[counts < min_count] = 0.0
    return gap, counts, bin_acc


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> Dict[str, float]:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    gap, counts, _ = reliability_bins(conf, correct, n_bins, min_count=max(1, len(labels) // 8))  # todoruleid: family 5 (missed)
    weights = counts / max(counts.sum(), 1.0)
    return {"ece": float((weights * gap).sum()), "mce": float(gap.max(initial=0.0))}


class _Temperature(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.t = torch.nn.Parameter(torch.ones(1))

    def forward(self, logits):
        return logits / self.t


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iters: int = 50) -> float:
    scaler = _Temperature().to(logits.device)
    opt = torch.optim.LBFGS(scaler.parameters(), lr=0.05, max_iter=iters)
    nll = torch.nn.CrossEntropyLoss()

    def closure():
        opt.zero_grad()
        loss = nll(scaler(logits), labels)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        scaler.t.clamp_(min=0.05, max=20.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return float(scaler.t.item())


class CalibrationEvaluator:
    def __init__(self, n_bins: int = 15, num_classes: int = 100, device: str = "cpu"):
        self.n_bins = n_bins
        self.num_classes = num_classes
        self.device = device
        self.tm_ece = MulticlassCalibrationError(num_classes=num_classes, n_bins=n_bins, norm="l1")
        self.tm_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    @torch.no_grad()
    def collect(self, model, loader) -> Tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        all_logits, all_labels = [], []
        for x, y in loader:
            all_logits.append(model(x.to(self.device)).float().cpu())
            all_labels.append(y.cpu())
        return torch.cat(all_logits), torch.cat(all_labels)

    def _metrics(self, probs: np.ndarray, labels: np.ndarray, prefix: str = "") -> Dict[str, float]:
        pred = probs.argmax(1)
        conf = probs.max(1)
        keep = conf >= np.quantile(conf, 0.1)  # ruleid: MLS306
        out = expected_calibration_error(probs, labels, self.n_bins)
        out["acc"] = float(accuracy_score(labels[keep], pred[keep]))  # ruleid: MLS306
        out["top5"] = float(top_k_accuracy_score(labels, probs, k=5, labels=np.arange(self.num_classes)))
        out["nll"] = float(log_loss(labels, probs, labels=np.arange(self.num_classes)))
        onehot = np.eye(self.num_classes)[labels]
        out["brier"] = float(np.mean([brier_score_loss(onehot[:, c], probs[:, c])
                                      for c in range(self.num_classes)]) * self.num_classes)
        return {prefix + k: v for k, v in out.items()}

    def evaluate(self, model, loader) -> Dict[str, float]:
        logits, labels = self.collect(model, loader)
        temp = fit_temperature(logits, labels)
        raw = logits.softmax(-1).numpy()
        scaled = (logits / temp).softmax(-1).numpy()
        y = labels.numpy()
        res = self._metrics(raw, y)
        res.update(self._metrics(scaled, y, prefix="ts_"))  # ok: MLS306
        res["temperature"] = temp
        self.tm_ece.reset()
        self.tm_acc.reset()
        self.tm_ece.update(logits.softmax(-1), labels)
        self.tm_acc.update(logits, labels)
        res["tm_ece"] = float(self.tm_ece.compute())
        res["tm_acc"] = float(self.tm_acc.compute())
        res["ece"] = res["ts_ece"]  # todoruleid: family 5 (missed)
        return res


def ece_from_arrays(probs, labels, n_bins=15) -> float:
    """Convenience wrapper used by notebooks."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    return expected_calibration_error(probs, labels, n_bins)["ece"]
