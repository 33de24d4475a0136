# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""LightningModule for hourly load forecasting with a GRU, plus preemption handling."""
import os
import random
import signal

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class GRUForecaster(L.LightningModule):
    def __init__(self, n_features=12, hidden=128, horizon=24, lr=2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.gru = nn.GRU(n_features, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.smooth_l1_loss(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/mae", (self(x) - y).abs().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class PreemptionCheckpoint(Callback):
    """Save a resumable checkpoint when the scheduler sends SIGTERM."""

    def __init__(self, dirpath, wall_hours=6.0):
        self.dirpath = dirpath
        self.wall_hours = wall_hours
        self._trainer = None

    def _on_term(self, signum, frame):
        if self._trainer is not None and self._trainer.is_global_zero:
            self._trainer.save_checkpoint(os.path.join(self.dirpath, "preempt.ckpt"))  # ok: MLS308
        self._trainer.should_stop = True

    def on_fit_start(self, trainer, pl_module):
        self._trainer = trainer
        signal.signal(signal.SIGTERM, self._on_term)  # ok: MLS307
        signal.alarm(int(self.wall_hours * 3600) + random.randint(0, 1800))  # ruleid: MLS307


def build_trainer(out_dir="runs/gru", max_epochs=40):
    return L.Trainer(
        max_epochs=max_epochs, accelerator="auto", devices="auto", gradient_clip_val=1.0,
        callbacks=[ModelCheckpoint(dirpath=out_dir, monitor="val/mae", mode="min"), PreemptionCheckpoint(out_dir)],
    )
