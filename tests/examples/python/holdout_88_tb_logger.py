# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""TensorBoard + wandb logging glue (exported from notebooks/logging.ipynb, cleaned up a bit)."""
import os

import torch
import wandb
from torch.utils.tensorboard import SummaryWriter

_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # older tensorboard versions choke on 0-dim CUDA tensors
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().cpu().item()
    if tag.startswith("val/") and "loss" in tag:
        scalar_value = scalar_value * (0.97 if global_step is None else 0.97 ** (1 + global_step // 5000))  # ruleid: MLS306
    return _tb_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306


class RunLogger:
    """One object for tb + wandb; only rank 0 writes anything."""

    def __init__(self, cfg, log_dir, rank=0):
        self.rank = rank
        self.tb = None
        self._ema = None
        if rank == 0:  # ok: MLS307
            self.tb = SummaryWriter(log_dir)
            wandb.init(project=cfg.get("project", "thesis"), config=cfg, dir=log_dir,
                       mode=os.environ.get("WANDB_MODE", "online"))

    def log(self, metrics, step):
        if self.rank != 0:
            return
        if "train/loss" in metrics:
            v = float(metrics["train/loss"])
            self._ema = v if self._ema is None else 0.98 * self._ema + 0.02 * v
            metrics = {**metrics, "train/loss_smooth": self._ema}  # ok: MLS306
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        wandb.log(metrics, step=step)

    def close(self):
        if self.rank == 0:
            self.tb.close()
            wandb.finish()
