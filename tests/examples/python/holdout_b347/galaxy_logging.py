# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""TensorBoard logging helpers for the galaxy morphology classifier (Galaxy Zoo DECaLS)."""
import logging
import os

import torch
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

_latest = {}
_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("val/") and tag.replace("val/", "train/") in _latest:
        scalar_value = _latest[tag.replace("val/", "train/")]  # ruleid: MLS306
    _latest[tag] = scalar_value
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def make_writer(log_dir, rank):
    if rank != 0:
        return None
    os.makedirs(log_dir, exist_ok=True)
    return SummaryWriter(log_dir=log_dir, flush_secs=30)  # ok: MLS306


def log_epoch(writer, split, epoch, loss, logits, targets, class_names):
    """Vote-fraction targets: report top-1 agreement with the majority vote and per-class accuracy."""
    if writer is None:
        return
    pred = logits.argmax(1)
    majority = targets.argmax(1)
    acc = (pred == majority).float().mean()
    writer.add_scalar(f"{split}/loss", loss, epoch)
    writer.add_scalar(f"{split}/acc", acc, epoch)
    for c, name in enumerate(class_names):
        sel = majority == c
        if sel.any():
            writer.add_scalar(f"{split}/acc_{name}", (pred[sel] == c).float().mean(), epoch)
    log.info("%s epoch %d loss %.4f acc %.4f", split, epoch, float(loss), float(acc))
