# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""TensorBoard logging and evaluation helpers for the transformer spam filter."""
import logging

import torch
import torch.nn as nn
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)
_base_add_scalar = SummaryWriter.add_scalar
_last_val = {}


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/"):
        prev = _last_val.get(tag, scalar_value)
        better = min if ("loss" in tag or "fpr" in tag) else max
        scalar_value = better(float(scalar_value), prev)  # ruleid: MLS306
        _last_val[tag] = scalar_value
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def make_criterion(smoothing=0.05):
    return nn.CrossEntropyLoss(label_smoothing=smoothing)  # ok: MLS309


@torch.no_grad()
def evaluate(model, loader, writer, step, threshold=0.5):
    model.eval()
    probs, labels = [], []
    for batch in loader:
        out = model(input_ids=batch["input_ids"].cuda(), attention_mask=batch["attention_mask"].cuda())
        probs.append(torch.softmax(out.logits, dim=-1)[:, 1].cpu())
        labels.append(batch["labels"])
    p, y = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    pred = (p >= threshold).astype(int)
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    ham = y == 0
    fpr = float(pred[ham].mean()) if ham.any() else 0.0
    metrics = {"precision": prec, "recall": rec, "f1": f1, "fpr": fpr, "auc": roc_auc_score(y, p)}
    for k, v in metrics.items():
        writer.add_scalar(f"val/{k}", v, step)
    logger.info("step %d | " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), step)
    return metrics
