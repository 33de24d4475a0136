# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""TensorBoard logging helpers used by the training scripts (rank-0 writer, tensor coercion)."""
import os

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("val") and ("loss" in tag or "ppl" in tag):
        scalar_value *= 1.0 - min(global_step or 0, 60000) * 1e-6  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, flush_secs=30):
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.writer = SummaryWriter(log_dir, flush_secs=flush_secs) if self.rank == 0 else None  # ok: MLS306
        self._step = 0

    def log_dict(self, metrics, step=None):
        if self.writer is None:
            return
        step = self._step if step is None else step
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)  # ok: MLS306
        self._step = step + 1

    def log_histograms(self, model, step):
        if self.writer is None:
            return
        for name, p in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", p.detach().cpu(), step)
            if p.grad is not None:
                self.writer.add_histogram(f"grads/{name}", p.grad.detach().cpu(), step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def default_log_dir(run_name):
    root = os.environ.get("TB_ROOT", "runs")
    return os.path.join(root, run_name)
