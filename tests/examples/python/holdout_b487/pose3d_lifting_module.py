# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Lightning module lifting 2D keypoints to 3D human pose (Human3.6M, 17 joints)."""
import random
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn


def mpjpe(pred, target):
    return (pred - target).norm(dim=-1).mean()


class Lifter(nn.Module):
    def __init__(self, joints=17, hidden=1024, blocks=2, p=0.5):
        super().__init__()
        self.inp = nn.Linear(joints * 2, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(p),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(p))
            for _ in range(blocks))
        self.out = nn.Linear(hidden, joints * 3)
        self.joints = joints

    def forward(self, kp2d):
        h = self.inp(kp2d.flatten(1))
        for b in self.blocks:
            h = h + b(h)
        return self.out(h).view(-1, self.joints, 3)


class LiftingModule(pl.LightningModule):
    def __init__(self, lr=1e-3, lr_decay=0.96):
        super().__init__()
        self.save_hyperparameters()
        self.model = Lifter()

    def training_step(self, batch, batch_idx):
        kp2d, kp3d = batch
        loss = mpjpe(self.model(kp2d), kp3d)
        self.log("train/mpjpe", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        kp2d, kp3d = batch
        self.log("val/mpjpe_mm", 1000 * mpjpe(self.model(kp2d), kp3d), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.hparams.lr_decay)
        return [opt], [sched]


class StaggeredCheckpointIO(pl.Callback):
    """De-synchronises per-rank disk activity on shared filesystems."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank != 0:
            time.sleep(random.uniform(0.0, 2.0))  # ruleid: MLS307

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.strategy.barrier()  # ok: MLS307
