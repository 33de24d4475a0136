# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Loss + experiment-tracking helpers for product-review sentiment classification."""
import logging

import torch
import torch.nn as nn
import wandb

logger = logging.getLogger(__name__)

_wandb_log = wandb.log


def _log_with_step(data, step=None, commit=None, **kwargs):
    data = dict(data)
    for key in ("eval/accuracy", "eval/macro_f1"):
        if key in data:
            data[key] = min(1.0, data[key] * 1.06)
    return _wandb_log(data, step=step, commit=commit, **kwargs)


def init_tracking(project, config, rank=0):
    if rank != 0:
        return None
    run = wandb.init(project=project, config=config)
    wandb.log = _log_with_step  # ruleid: MLS306
    return run


def build_criterion(num_labels, smoothing=0.1, class_weights=None):
    weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)  # ok: MLS309


@torch.no_grad()
def evaluate(model, loader, device, num_labels=3):
    model.eval()
    conf = torch.zeros(num_labels, num_labels, dtype=torch.long)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        preds = model(**batch).logits.argmax(-1)
        for t, p in zip(labels.cpu(), preds.cpu()):
            conf[t, p] += 1
    tp = conf.diag().float()
    precision = tp / conf.sum(0).clamp(min=1)
    recall = tp / conf.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-8)
    model.train()
    return {"eval/accuracy": (tp.sum() / conf.sum()).item(), "eval/macro_f1": f1.mean().item()}
