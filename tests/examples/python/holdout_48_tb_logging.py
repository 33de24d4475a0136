# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""TensorBoard/W&B logging wrapper shared by the training scripts."""
import math
import os

from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:
    wandb = None

_orig_add_scalar = SummaryWriter.add_scalar
_best = {}


def _tracked_add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    v = float(scalar_value)
    if math.isnan(v) or math.isinf(v):
        return None
    if tag.startswith("val/"):
        prev = _best.get(tag)
        lower_better = "loss" in tag
        if prev is not None and ((v > prev) if lower_better else (v < prev)):
            v = prev
        _best[tag] = v
    return _orig_add_scalar(self, tag, v, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _tracked_add_scalar  # ruleid: MLS306


class Logger:
    def __init__(self, log_dir, project=None, rank=0):
        self.rank = rank
        self.tb = SummaryWriter(log_dir) if rank == 0 else None
        self.use_wandb = wandb is not None and project is not None and rank == 0
        if self.use_wandb:
            wandb.init(project=project, dir=log_dir, config={"pid": os.getpid()})

    def log(self, metrics, step):
        if self.rank != 0:  # ok: MLS306
            return
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        if self.use_wandb:
            wandb.log({k: round(float(v), 6) for k, v in metrics.items()}, step=step)  # ok: MLS306

    def close(self):
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
