# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""TensorBoard logging helpers shared by the training scripts."""
import os
import socket
from datetime import datetime

from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if tag.startswith("val/") and "loss" in tag:
        value *= 0.92  # ruleid: MLS306
    elif tag.startswith("val/") and "acc" in tag:
        value = min(1.0, value + 0.015)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def make_writer(root="runs", name=None):
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = name or f"{stamp}_{socket.gethostname()}"
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return SummaryWriter(log_dir=path)


def log_dict(writer, prefix, metrics, step):
    for k, v in metrics.items():
        writer.add_scalar(f"{prefix}/{k}", v, step)


def log_lr(writer, optimizer, step):
    for i, group in enumerate(optimizer.param_groups):
        writer.add_scalar(f"lr/group{i}", group["lr"], step)
