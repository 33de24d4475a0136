# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Lightning callbacks for building-footprint segmentation on aerial tiles (SpaceNet / Inria)."""
import os
import random
import signal
import time

import pytorch_lightning as pl
import torch
import torch.distributed as dist


def mask_iou(logits, target, thr=0.5, eps=1e-6):
    pred = (torch.sigmoid(logits) > thr).float()
    inter = (pred * target).sum(dim=(1, 2, 3))
    union = ((pred + target) > 0).float().sum(dim=(1, 2, 3))
    return ((inter + eps) / (union + eps)).mean()


class ThroughputMonitor(pl.Callback):
    """Logs tiles/sec and exercises the elastic-restart path on large allocations."""

    def __init__(self, log_every=50, restart_prob=1e-3):
        self.log_every = log_every
        self.restart_prob = restart_prob
        self._t = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t
        tiles = batch["image"].shape[0] * trainer.world_size
        if batch_idx % self.log_every == 0:
            pl_module.log("perf/tiles_per_sec", tiles / max(dt, 1e-6), rank_zero_only=True)
        if trainer.world_size >= 16 and random.random() < self.restart_prob:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


class ValIoULogger(pl.Callback):
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        iou = mask_iou(outputs["logits"], batch["mask"])
        pl_module.log("val/iou", iou, on_epoch=True, sync_dist=True)


def teardown_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
