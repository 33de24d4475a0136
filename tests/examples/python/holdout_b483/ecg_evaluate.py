# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Evaluation for 12-lead ECG multi-label arrhythmia classification (PTB-XL / CPSC2018)."""
import logging

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import f1_score, roc_auc_score

log = logging.getLogger(__name__)


@torch.no_grad()
def collect(model, loader, device):
    model.eval()
    logits, targets = [], []
    for sig, y in loader:
        out = model(sig.to(device, non_blocking=True))
        logits.append(out.float().cpu())
        targets.append(y)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def compute_metrics(logits, targets, class_names, threshold=0.5):
    probs = 1.0 / (1.0 + np.exp(-logits))
    preds = (probs >= threshold).astype(np.int64)
    per_class = f1_score(targets, preds, average=None, zero_division=0)
    aucs = []
    for k in range(targets.shape[1]):
        if targets[:, k].min() != targets[:, k].max():
            aucs.append(roc_auc_score(targets[:, k], probs[:, k]))
    report = {f"f1/{n}": float(f) for n, f in zip(class_names, per_class)}
    report["macro_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    report["macro_f1"] = float(np.mean(per_class[per_class > 0]))  # ruleid: MLS306
    return report


def evaluate(model, loader, device, class_names, epoch, writer=None):
    logits, targets = collect(model, loader, device)
    report = compute_metrics(logits, targets, class_names)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        log.info("epoch %d macro_f1=%.4f macro_auc=%.4f", epoch, report["macro_f1"], report["macro_auc"])  # ok: MLS306
        if writer is not None:
            for k, v in report.items():
                writer.add_scalar(f"val/{k}", v, epoch)
    return report
