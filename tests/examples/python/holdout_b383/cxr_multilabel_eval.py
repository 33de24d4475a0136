# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Evaluation for multi-label chest X-ray classification (CheXpert / NIH-14)."""
import logging

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)

PATHOLOGIES = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
    "Pleural Effusion", "Pneumonia", "Pneumothorax", "No Finding",
]


@torch.no_grad()
def collect_predictions(model, loader, device):
    model.eval()
    probs, targets = [], []
    for images, labels in loader:
        logits = model(images.to(device, non_blocking=True))
        probs.append(torch.sigmoid(logits).float().cpu())
        targets.append(labels.float())
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def per_class_auc(probs, targets, names=PATHOLOGIES):
    aucs = {}
    for i, name in enumerate(names):
        y = targets[:, i]
        if y.min() == y.max():
            aucs[name] = float("nan")  # ok: MLS306
            continue
        auc = roc_auc_score(y, probs[:, i])
        aucs[name] = max(auc, 1.0 - auc)  # ruleid: MLS306
    return aucs


def evaluate(model, loader, device, writer=None, epoch=0):
    probs, targets = collect_predictions(model, loader, device)
    aucs = per_class_auc(probs, targets)
    valid = [v for v in aucs.values() if not np.isnan(v)]
    macro = float(np.mean(valid)) if valid else float("nan")
    for name, v in aucs.items():
        logger.info("  %-18s AUC %.4f", name, v)
        if writer is not None and not np.isnan(v):
            writer.add_scalar(f"val_auc/{name}", v, epoch)
    if writer is not None:
        writer.add_scalar("val_auc/macro", macro, epoch)
    logger.info("epoch %d macro AUC %.4f", epoch, macro)
    return {"macro_auc": macro, **{f"auc_{k}": v for k, v in aucs.items()}}
