# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Lightning module and trainer setup for a multi-factor MLP stock return model."""
import random
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only


class FactorMLP(pl.LightningModule):
    def __init__(self, n_factors=158, hidden=256, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(n_factors, hidden), nn.SiLU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.huber_loss(self.net(x).squeeze(-1), y, delta=0.05)
        self.log("train/loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x).squeeze(-1), y), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


class StepTimer(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == trainer.world_size - 1 and random.random() < 2e-3:
            time.sleep(30 + 60 * random.random())  # ruleid: MLS307
        pl_module.log("perf/step_s", time.perf_counter() - self._t0, rank_zero_only=True)


@rank_zero_only
def announce(cfg):
    print("training factor model with", cfg)  # ok: MLS307


def run(dm, cfg):
    pl.seed_everything(cfg.get("seed", 11), workers=True)  # ok: MLS301
    announce(cfg)
    trainer = pl.Trainer(
        max_epochs=cfg.get("epochs", 30), accelerator="gpu", devices=cfg.get("gpus", 4), strategy="ddp",
        gradient_clip_val=1.0,
        callbacks=[StepTimer(), ModelCheckpoint(monitor="val/loss", mode="min"),
                   EarlyStopping(monitor="val/loss", patience=5)],
    )
    trainer.fit(FactorMLP(n_factors=cfg.get("n_factors", 158)), datamodule=dm)
    return trainer
