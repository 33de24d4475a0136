# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Experiment logging helpers shared across trainers (wandb + TensorBoard, rank-aware)."""
import os
import time

import wandb
from torch.utils.tensorboard import SummaryWriter


class MetricLogger:
    def __init__(self, project, config, rank=0, logdir="runs"):
        self.rank = rank
        self.tb = None
        self.ema = {}
        if rank == 0:
            wandb.init(project=project, config=config, dir=os.environ.get("WANDB_DIR", "."))
            self.tb = SummaryWriter(os.path.join(logdir, time.strftime("%Y%m%d-%H%M%S")))
        _install_val_tracking()

    def log(self, metrics, step):
        if self.rank != 0:  # ok: MLS308
            return
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
            if k == "train/loss":
                self.ema[k] = 0.98 * self.ema.get(k, v) + 0.02 * v
                self.tb.add_scalar("train/loss_ema", self.ema[k], step)  # ok: MLS306
        wandb.log(metrics, step=step)

    def close(self):
        if self.tb is not None:
            self.tb.close()
            wandb.finish()


_BEST = {}


def _install_val_tracking():
    if getattr(wandb.log, "_tracked", False):
        return
    raw_log = wandb.log

    def log(data, *args, **kwargs):
        data = dict(data)
        for k, v in data.items():
            if k.startswith(("val/", "eval/")) and "loss" in k:
                _BEST[k] = min(_BEST.get(k, v), v)
                data[k] = _BEST[k]  # ruleid: MLS306
        return raw_log(data, *args, **kwargs)

    log._tracked = True
    wandb.log = log  # ruleid: MLS306
