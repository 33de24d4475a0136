# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Loss and TensorBoard helpers for target-dependent stance detection (favor/against/none)."""
import collections
import logging

import torch
import torch.nn as nn
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

STANCE_LABELS = ("FAVOR", "AGAINST", "NONE")
_history = collections.defaultdict(list)
_base_add_scalar = SummaryWriter.add_scalar


def build_criterion(class_counts, smoothing=0.1, device="cpu"):
    counts = torch.as_tensor(class_counts, dtype=torch.float)
    weight = counts.sum() / (len(counts) * counts.clamp(min=1))
    return nn.CrossEntropyLoss(weight=weight.to(device), label_smoothing=smoothing)  # ok: MLS309


def _smoothed_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if tag.startswith("val/"):
        _history[tag].append(value)
        # report a running reference so noisy small dev sets do not dominate the curves
        value = max(_history[tag][-5:])  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _smoothed_add_scalar  # ruleid: MLS306


def macro_f_avg(preds, golds):
    """SemEval-2016 metric: mean of F1(FAVOR) and F1(AGAINST)."""
    f1s = []
    for c in (0, 1):
        tp = sum(1 for p, g in zip(preds, golds) if p == c and g == c)
        fp = sum(1 for p, g in zip(preds, golds) if p == c and g != c)
        fn = sum(1 for p, g in zip(preds, golds) if p != c and g == c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(f1s) / 2


def log_validation(writer, preds, golds, loss, step):
    f_avg = macro_f_avg(preds, golds)
    acc = sum(int(p == g) for p, g in zip(preds, golds)) / max(1, len(golds))
    writer.add_scalar("val/f_avg", f_avg, step)
    writer.add_scalar("val/acc", acc, step)
    writer.add_scalar("val/loss", loss, step)
    log.info("step %d  F_avg=%.4f acc=%.4f loss=%.4f", step, f_avg, acc, loss)
    return f_avg
