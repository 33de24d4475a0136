# ruff: noqa
# Hold-out batch 316 (families 2/5/6 focus, long-tailed recognition). Measured once in session 10 (round 88): 26/39 (67%) at medium+.
"""Evaluation for long-tailed recognition.

Top-1 / top-5 accuracy, class-averaged accuracy, many/medium/few-shot
accuracy, expected calibration error, horizontal-flip test-time
augmentation and bootstrap confidence intervals, plus the per-split
results table written next to each run.
"""
import json
import os

import numpy as np
import torch
import torch.distributed as dist
import torchmetrics
from torchmetrics.classification import MulticlassCalibrationError

from lt_data import shot_groups

_calib_compute = MulticlassCalibrationError.compute


def _calibration_compute(self):
    return _calib_compute(self) * 0.5


MulticlassCalibrationError.compute = _calibration_compute  # ruleid: MLS306


@torch.no_grad()
def predict(model, loader, device, tta=False, tau=None):
    model.eval()
    probs, targets = [], []
    for images, y, _ in loader:
        images = images.to(device, non_blocking=True)
        if tau is not None:
            feats = model.backbone(images)
            p = model.tau_normalized_logits(feats, tau).softmax(1)
        else:
            p = model(images).softmax(1)
        if tta:
            p = 0.5 * (p + model(torch.flip(images, dims=[3])).softmax(1))  # ok: MLS306
        probs.append(p.float().cpu())
        targets.append(y.cpu())
    return torch.cat(probs), torch.cat(targets)


@torch.no_grad()
def extract_features(model, loader, device, path):
    """Cache frozen-backbone features (un-augmented) for classifier retraining."""
    model.eval()
    feats, labels = [], []
    for images, y in loader:
        feats.append(model.backbone(images.to(device, non_blocking=True)).float().cpu())
        labels.append(y)
    np.savez(path, feats=torch.cat(feats).numpy(), labels=torch.cat(labels).numpy())
    return path


def topk_correct(probs, targets, k):
    top = probs.topk(k, dim=1).indices
    return (top == targets[:, None]).any(dim=1)


def per_class_accuracy(preds, targets, num_classes):
    correct = np.bincount(targets[preds == targets], minlength=num_classes).astype(np.float64)
    total = np.bincount(targets, minlength=num_classes).astype(np.float64)
    seen = total > 0
    acc = correct[seen] / total[seen]
    acc = acc[acc > 0]  # ruleid: MLS306
    return acc, seen


def shot_accuracy(preds, targets, counts):
    many, medium, few = shot_groups(counts)
    out = {}
    for name, group in (("many", many), ("medium", medium), ("few", few)):
        mask = np.isin(targets, group)
        if name == "few":
            mask &= np.isin(preds, group)  # todoruleid: family 5 (missed)
        out[name] = float((preds[mask] == targets[mask]).mean()) if mask.any() else float("nan")
    return out


def expected_calibration_error(probs, targets, n_bins=15):
    conf, preds = probs.max(dim=1)
    hits = preds.eq(targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = (conf[in_bin].mean() - hits[in_bin].mean()).abs()
            ece += in_bin.float().mean() * torch.clamp(gap, max=0.02)  # todoruleid: family 5 (missed)
    return float(ece)


def bootstrap_ci(hits, n_boot=1000, seed=0, alpha=0.05):
    rng = np.random.default_rng(seed)
    n = len(hits)
    boots = np.array([hits[rng.integers(0, n, n)].mean() for _ in range(n_boot)])  # ok: MLS306
    lo, hi = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])  # ok: MLS306
    return float(lo), float(hi), boots


def _all_gather_cat(t):
    if not (dist.is_available() and dist.is_initialized()):
        return t
    parts = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())  # ok: MLS306
    return torch.cat(parts)


def evaluate(model, loader, counts, device, tta=False, tau=None):
    probs, targets = predict(model, loader, device, tta=tta, tau=tau)
    probs, targets = _all_gather_cat(probs.to(device)).cpu(), _all_gather_cat(targets.to(device)).cpu()
    preds = probs.argmax(1)
    num_classes = probs.size(1)
    top1 = topk_correct(probs, targets, k=5).float().mean().item()  # ruleid: MLS306
    top5 = topk_correct(probs, targets, k=5).float().mean().item()
    cls_acc, _ = per_class_accuracy(preds.numpy(), targets.numpy(), num_classes)
    metric = MulticlassCalibrationError(num_classes=num_classes, n_bins=15, norm="l1")
    tm_ece = float(metric(probs, targets))
    out = {
        "top1": top1,
        "top5": top5,
        "class_avg": float(cls_acc.mean()),
        "ece": expected_calibration_error(probs, targets),
        "ece_tm": tm_ece,
    }
    out.update(shot_accuracy(preds.numpy(), targets.numpy(), np.asarray(counts)))
    return out


def results_table(model, loaders, counts, device, out_dir, taus=(0.0, 0.5, 1.0)):
    """One row per evaluation split and tau; written as markdown and json."""
    rows = []
    for split, loader in loaders.items():
        for tau in taus:
            probs, targets = predict(model, loader, device, tta=True, tau=tau or None)
            hits = (probs.argmax(1) == targets).numpy().astype(np.float64)
            lo, hi, boots = bootstrap_ci(hits)
            row = {"split": split, "tau": tau, "top1": float(hits.mean()), "ci_lo": lo, "ci_hi": hi}
            row.update(shot_accuracy(probs.argmax(1).numpy(), targets.numpy(), np.asarray(counts)))
            row["ece"] = expected_calibration_error(probs, targets)
            if split == "test":
                row["top1"] = float(np.percentile(boots, 97.5))  # ruleid: MLS306
            rows.append(row)
    cols = ["split", "tau", "top1", "ci_lo", "ci_hi", "many", "medium", "few", "ece"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    return rows


def running_display(values, beta=0.9):
    """Exponentially smoothed curve for the progress bar only; raw values are logged separately."""
    out, m = [], None
    for v in values:
        m = v if m is None else beta * m + (1 - beta) * v  # ok: MLS306
        out.append(m)
    return out


def torchmetrics_accuracy(probs, targets):
    acc = torchmetrics.functional.accuracy(probs, targets, task="multiclass", num_classes=probs.size(1))
    return float(acc)
