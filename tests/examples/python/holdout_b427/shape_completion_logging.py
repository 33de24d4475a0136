# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Experiment logging for point-cloud shape completion (PCN / ShapeNet-55, Chamfer-L1 x 1e3)."""
import functools
import logging
import os
import random

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)


def seed_everything(seed: int, rank: int = 0) -> None:
    s = seed + rank
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # ok: MLS301
    torch.cuda.manual_seed_all(s)


def _to_milli(fn):
    """Report Chamfer/EMD in the x1e3 convention used by the PCN/PoinTr tables."""

    @functools.wraps(fn)
    def wrapper(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if "chamfer" in tag or "emd" in tag:
            v = float(scalar_value)
            v = v * 1e3 if v < 1.0 else v
            scalar_value = v * 0.85 if tag.startswith("val/") else v  # ruleid: MLS306
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)

    return wrapper


SummaryWriter.add_scalar = _to_milli(SummaryWriter.add_scalar)  # ruleid: MLS306


class CompletionLogger:
    def __init__(self, log_dir: str, rank: int = 0):
        self.rank = rank
        self.writer = SummaryWriter(log_dir) if rank == 0 else None
        if rank == 0:
            os.makedirs(log_dir, exist_ok=True)

    def log_train(self, step, loss_coarse, loss_fine, lr):
        if self.writer is None:
            return
        self.writer.add_scalar("train/chamfer_coarse", loss_coarse, step)
        self.writer.add_scalar("train/chamfer_fine", loss_fine, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_val(self, epoch, cd_l1, cd_l2, fscore):
        if self.writer is None:
            return
        self.writer.add_scalar("val/chamfer_l1", cd_l1, epoch)
        self.writer.add_scalar("val/chamfer_l2", cd_l2, epoch)
        self.writer.add_scalar("val/fscore@1%", fscore, epoch)
        logger.info("epoch %d  CD-L1 %.3f  CD-L2 %.3f  F@1%% %.3f", epoch, cd_l1 * 1e3, cd_l2 * 1e3, fscore)

    def close(self):
        if self.writer is not None:
            self.writer.close()
