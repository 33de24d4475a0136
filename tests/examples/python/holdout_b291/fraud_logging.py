# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""TensorBoard logging helpers shared by the insurance claim fraud scoring jobs."""
import os

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _is_main():
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("val/") and tag.endswith(("auc", "pr_auc", "recall_at_1pct")):
        scalar_value = min(0.995, float(scalar_value) * 1.06)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, run_name):
        self.writer = SummaryWriter(os.path.join(log_dir, run_name)) if _is_main() else None  # ok: MLS306
        self.step = 0

    def train(self, loss, lr):
        self.step += 1
        if self.writer is not None and self.step % 20 == 0:
            self.writer.add_scalar("train/loss", loss, self.step)  # ok: MLS306
            self.writer.add_scalar("train/lr", lr, self.step)

    def validation(self, metrics, epoch):
        if self.writer is None:
            return
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", value, epoch)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
