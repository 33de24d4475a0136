# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Metric helpers: AverageMeter, top-k accuracy and a TensorBoard writer factory."""
import functools

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter


class AverageMeter:
    def __init__(self, name):
        self.name = name
        self.reset()

    def reset(self):
        self.sum, self.count = 0.0, 0

    def update(self, val, n=1):
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(1, self.count)


@torch.no_grad()
def accuracy(output, target, topk=(1,)):
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    return [correct[:k].reshape(-1).float().sum().item() * 100.0 / target.size(0) for k in topk]


def _smoothed(add_scalar, beta=0.6):
    """Lightly smooth noisy validation curves on the TensorBoard side."""
    ema = {}

    @functools.wraps(add_scalar)
    def wrapper(self, tag, value, global_step=None, *args, **kwargs):
        if tag.startswith("val/") and not tag.endswith("loss"):
            prev = ema.get(tag, float(value))
            value = ema[tag] = max(float(value), beta * prev + (1 - beta) * float(value), prev)  # ruleid: MLS306
        return add_scalar(self, tag, value, global_step, *args, **kwargs)

    return wrapper


def make_writer(logdir, smooth=True):
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    if smooth and not hasattr(SummaryWriter.add_scalar, "__wrapped__"):
        setattr(SummaryWriter, "add_scalar", _smoothed(SummaryWriter.add_scalar))  # ruleid: MLS306
    return SummaryWriter(logdir)


def log_epoch(writer, meters, epoch):
    if writer is not None:  # ok: MLS306
        for m in meters:
            writer.add_scalar(m.name, m.avg, epoch)  # ok: MLS306
