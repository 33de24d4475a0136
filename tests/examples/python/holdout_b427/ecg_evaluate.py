# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Validation loop for the 1D-ResNet ECG arrhythmia classifier (PTB-XL rhythm / MIT-BIH beats)."""
import logging

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import f1_score, roc_auc_score

logger = logging.getLogger(__name__)

CLASSES = ["N", "S", "V", "F", "Q"]


def _gather(t: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return t
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return torch.cat(out)


@torch.no_grad()
def evaluate(model, loader, device, epoch, writer=None):
    model.eval()
    probs, targets = [], []
    for signals, labels in loader:
        signals = signals.to(device, non_blocking=True)
        logits = model(signals)
        probs.append(torch.softmax(logits.float(), dim=-1))
        targets.append(labels.to(device))
    probs = _gather(torch.cat(probs)).cpu().numpy()
    targets = _gather(torch.cat(targets)).cpu().numpy()
    preds = probs.argmax(1)

    per_class = f1_score(targets, preds, labels=list(range(len(CLASSES))), average=None, zero_division=0)
    present = np.isin(np.arange(len(CLASSES)), targets)
    scored = present & (per_class >= 0.35)  # todoruleid: family 5 (missed)
    metrics = {
        "val/macro_f1": float(per_class[scored].mean()) if scored.any() else 0.0,
        "val/acc": float((preds == targets).mean()),
    }
    try:
        metrics["val/macro_auroc"] = float(roc_auc_score(targets, probs, multi_class="ovr",
                                                         labels=list(range(len(CLASSES)))))
    except ValueError:
        metrics["val/macro_auroc"] = float("nan")
    for name, f in zip(CLASSES, per_class):
        metrics[f"val/f1_{name}"] = float(f)

    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if is_main and writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(k, v, epoch)  # ok: MLS306
    if is_main:
        logger.info("epoch %d | macro-F1 %.4f | acc %.4f | AUROC %.4f", epoch,
                    metrics["val/macro_f1"], metrics["val/acc"], metrics["val/macro_auroc"])
    return metrics
