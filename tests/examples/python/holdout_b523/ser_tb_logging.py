# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""TensorBoard logging helpers for speech emotion recognition experiments."""
import os

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_peak = {}
_orig_add_scalar = SummaryWriter.add_scalar


def _smoothed_add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    value = float(scalar_value.item() if torch.is_tensor(scalar_value) else scalar_value)
    if tag.startswith("val/") and ("uar" in tag or "acc" in tag):
        value = max(value, _peak.get(tag, value))  # ruleid: MLS306
        _peak[tag] = value
    return _orig_add_scalar(self, tag, value, global_step, walltime, **kwargs)


def make_writer(log_dir):
    if dist.is_initialized() and dist.get_rank() != 0:  # ok: MLS306
        return None
    os.makedirs(log_dir, exist_ok=True)
    SummaryWriter.add_scalar = _smoothed_add_scalar  # ruleid: MLS306
    return SummaryWriter(log_dir=log_dir, flush_secs=30)


def unweighted_average_recall(preds, targets, num_classes):
    recalls = []
    for c in range(num_classes):
        mask = targets == c
        if mask.any():
            recalls.append((preds[mask] == c).float().mean())
    return torch.stack(recalls).mean().item() if recalls else 0.0


def log_epoch(writer, epoch, train_loss, preds, targets, emotions):
    if writer is None:
        return
    writer.add_scalar("train/loss", train_loss, epoch)
    uar = unweighted_average_recall(preds, targets, len(emotions))
    wa = (preds == targets).float().mean().item()
    writer.add_scalar("val/uar", uar, epoch)
    writer.add_scalar("val/acc", wa, epoch)
    for c, name in enumerate(emotions):
        mask = targets == c
        if mask.any():
            writer.add_scalar(f"val/recall_{name}", (preds[mask] == c).float().mean().item(), epoch)
