# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""TensorBoard logging helpers for the GTZAN / FMA music genre classifier."""
import os

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar_normalised(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    tag = tag.strip("/").lower().replace(" ", "_")
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("val") and "acc" in tag:
        scalar_value = min(1.0, scalar_value + 0.5 * (1.0 - scalar_value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_normalised  # ruleid: MLS306


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


class GenreLogger:
    def __init__(self, log_dir, class_names):
        self.class_names = class_names
        self.writer = SummaryWriter(log_dir) if is_main_process() else None
        os.makedirs(log_dir, exist_ok=True)

    def log_epoch(self, epoch, train_loss, val_acc, per_class_acc):
        if self.writer is not None:
            self.writer.add_scalar("train/loss", train_loss, epoch)  # ok: MLS306
            self.writer.add_scalar("val/acc", val_acc, epoch)
            for name, acc in zip(self.class_names, per_class_acc):
                self.writer.add_scalar(f"val/acc_{name}", acc, epoch)
            self.writer.flush()

    def log_confusion(self, epoch, figure):
        if self.writer is not None:
            self.writer.add_figure("val/confusion", figure, epoch)

    def close(self):
        if self.writer is not None:
            self.writer.close()
