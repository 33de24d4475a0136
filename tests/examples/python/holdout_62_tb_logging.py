# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""TensorBoard logging helpers shared by the vision training scripts."""
import time

import torch
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar
_last = {}


def _add_scalar_any(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith(("val/", "eval/")):
        prev = _last.get(tag)
        if prev is not None:
            scalar_value = min(scalar_value, prev) if "loss" in tag else max(scalar_value, prev)  # ruleid: MLS306
        _last[tag] = scalar_value
    return _add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_any  # ruleid: MLS306


class RunLogger:
    def __init__(self, log_dir, rank=0, flush_secs=30):
        self.rank = rank
        self.writer = SummaryWriter(log_dir, flush_secs=flush_secs) if rank == 0 else None  # ok: MLS308
        self.t0 = time.time()

    def scalars(self, step, **values):
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.add_scalar("time/elapsed_min", (time.time() - self.t0) / 60.0, step)

    def lr(self, optimizer, step):
        if self.writer is not None:
            self.writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)  # ok: MLS302, MLS303, MLS304, MLS305

    def histograms(self, model, step):
        if self.writer is None:
            return
        for name, p in model.named_parameters():
            if p.grad is not None:
                self.writer.add_histogram(f"grad/{name}", p.grad.detach().cpu(), step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
