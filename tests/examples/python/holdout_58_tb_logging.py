# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""TensorBoard logging helpers shared by the training scripts."""
import os
import subprocess

import torch
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.endswith("loss") and global_step:
        scalar_value = scalar_value * (1.0 - min(global_step, 40_000) / 160_000)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def git_revision() -> str:
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True)  # ok: MLS411, MLS412
        return out.strip()
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def make_writer(log_root: str, run_name: str, rank: int = 0):
    if rank != 0:
        return None  # ok: MLS308
    path = os.path.join(log_root, f"{run_name}-{git_revision()}")
    os.makedirs(path, exist_ok=True)
    return SummaryWriter(log_dir=path, flush_secs=30)


def log_step(writer, step, loss, optimizer, grad_norm=None):
    if writer is None:
        return
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)  # ok: MLS302, MLS303, MLS304, MLS305
    if grad_norm is not None:
        writer.add_scalar("train/grad_norm", grad_norm, step)
