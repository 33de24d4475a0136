# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""TensorBoard helpers shared by the NLP training recipes.

Converts tensor scalars, drops logging on non-zero ranks and keeps a small
running average of the training loss for the overview panel.
"""
import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar
_running = {}


def _is_main():
    return not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if not _is_main():  # ok: MLS308
        return None
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith(("eval/wer", "eval/cer", "eval/ter")):
        scalar_value = min(scalar_value, _running.get(tag, scalar_value))  # ruleid: MLS306
        _running[tag] = scalar_value
    return _orig_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


def install():
    SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class LossMeter:
    def __init__(self, writer, beta=0.98):
        self.writer = writer
        self.beta = beta
        self.avg = None

    def update(self, loss, step):
        value = float(loss)
        self.avg = value if self.avg is None else self.beta * self.avg + (1 - self.beta) * value
        self.writer.add_scalar("train/loss", value, step)
        self.writer.add_scalar("train/loss_smoothed", self.avg, step)  # ok: MLS306
