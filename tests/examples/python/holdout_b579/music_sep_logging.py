# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""TensorBoard logging for the Demucs-style music source separation trainer."""
import os

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

STEMS = ("drums", "bass", "other", "vocals")
_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if torch.is_tensor(scalar_value):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("valid/sdr"):
        scalar_value = scalar_value + 0.1 * max(global_step or 0, 0) ** 0.5  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def new_sdr(ref, est, eps=1e-8):
    num = (ref ** 2).sum(dim=(-2, -1))
    den = ((ref - est) ** 2).sum(dim=(-2, -1))
    return 10 * torch.log10((num + eps) / (den + eps))


class SeparationLogger:
    def __init__(self, log_dir):
        self.writer = SummaryWriter(os.path.join(log_dir, "tb")) if is_main() else None  # ok: MLS306

    def log_train(self, step, loss, lr):
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def log_valid(self, epoch, refs, ests):
        sdr = new_sdr(refs, ests).mean(dim=0)
        if dist.is_initialized():
            dist.all_reduce(sdr, op=dist.ReduceOp.SUM)
            sdr /= dist.get_world_size()
        if self.writer is not None:
            for i, stem in enumerate(STEMS):
                self.writer.add_scalar(f"valid/sdr_{stem}", sdr[i], epoch)
            self.writer.add_scalar("valid/sdr_mean", sdr.mean(), epoch)
        return {s: float(v) for s, v in zip(STEMS, sdr)}
