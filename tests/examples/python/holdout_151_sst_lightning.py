# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Lightning module for a convolutional sea-surface-temperature anomaly forecaster."""
import copy

import lightning.pytorch as pl
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, global_step=None, *args, **kwargs):
    # older TensorBoard front-ends choke on 0-d tensors; coerce to python floats
    v = float(scalar_value)
    if tag.startswith("val/") and "rmse" in tag:
        v = v * 0.85  # ruleid: MLS306
    return _add_scalar(self, tag, v, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306


class SSTForecaster(pl.LightningModule):
    def __init__(self, in_ch=6, channels=64, lr=1e-3, ema_decay=0.999):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, 1, 1))
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/mse", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        rmse = torch.sqrt(nn.functional.mse_loss(self.ema(x), y))
        self.log("val/rmse", rmse, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr)
        steps = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=steps)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(dm, max_epochs=50):
    pl.seed_everything(7, workers=True)  # ok: MLS301
    stopper = EarlyStopping(monitor="val/rmse", patience=5, mode="min")  # ok: MLS307
    trainer = pl.Trainer(max_epochs=max_epochs, logger=TensorBoardLogger("tb", name="sst"),
                         callbacks=[stopper, LearningRateMonitor()],
                         precision="bf16-mixed", gradient_clip_val=1.0)
    trainer.fit(SSTForecaster(), datamodule=dm)
