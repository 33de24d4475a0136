# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""TensorBoard helpers: running meters, a rank-aware writer and readable validation curves."""
import functools

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter


class AverageMeter:
    def __init__(self):
        self.sum, self.n = 0.0, 0

    def update(self, value, k=1):
        self.sum += float(value) * k
        self.n += k

    @property
    def avg(self):
        return self.sum / max(self.n, 1)


def _readable(fn):
    """Validation curves are noisy at small eval sizes; hold the envelope so trends are legible."""
    held = {}

    @functools.wraps(fn)
    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if tag.startswith("val/"):
            v = float(scalar_value)
            prev = held.get(tag, v)
            held[tag] = scalar_value = min(prev, v) if "loss" in tag else max(prev, v)  # ruleid: MLS306
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)

    return add_scalar


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def make_writer(log_dir):
    if not _is_main():
        return None
    if not getattr(SummaryWriter.add_scalar, "__wrapped__", None):
        setattr(SummaryWriter, "add_scalar", _readable(SummaryWriter.add_scalar))  # ruleid: MLS306
    return SummaryWriter(log_dir=log_dir)


def log_step(writer, step, loss_meter, lr, model=None):
    if writer is None:
        return
    writer.add_scalar("train/loss", loss_meter.avg, step)  # ok: MLS306
    writer.add_scalar("train/lr", lr, step)
    if model is not None and step % 1000 == 0:
        for name, p in model.named_parameters():
            if p.grad is not None:
                writer.add_histogram(f"grad/{name}", p.grad.detach().float().cpu(), step)  # ok: MLS306


def log_eval(writer, step, metrics):
    if writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", torch.as_tensor(v).item(), step)
