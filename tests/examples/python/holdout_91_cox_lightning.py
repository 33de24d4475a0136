# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""DeepSurv-style Cox proportional hazards model on tabular EHR features, trained with Lightning."""
import os
import time

import lightning.pytorch as pl
import torch
import torch.nn as nn


def cox_ph_loss(risk, duration, event):
    order = torch.argsort(duration, descending=True)
    risk, event = risk[order], event[order]
    log_risk_set = torch.logcumsumexp(risk, dim=0)
    return -((risk - log_risk_set) * event).sum() / event.sum().clamp(min=1.0)


class DeepSurv(pl.LightningModule):
    def __init__(self, n_features, hidden=(128, 64), dropout=0.2, lr=1e-3, weight_decay=1e-4):
        super().__init__()
        self.save_hyperparameters()
        layers, d = [], n_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.SiLU(), nn.Dropout(dropout)]
            d = h
        self.net = nn.Sequential(*layers, nn.Linear(d, 1, bias=False))

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, duration, event = batch
        loss = cox_ph_loss(self(x), duration, event)
        self.log("train/cox_nll", loss, prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,  # ok: MLS302, MLS303, MLS304, MLS305
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ParquetPrefetchPacer(pl.Callback):
    """Spreads host->device copies so many ranks do not hammer the shared parquet mount at once."""

    def setup(self, trainer, pl_module, stage):
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        ranks = nodes * trainer.num_devices
        self.delay = 0.0 if ranks <= 64 else 0.002 * ranks

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.delay:
            time.sleep(self.delay)  # ruleid: MLS307


def fit(datamodule, n_features, max_epochs=50, devices="auto", num_nodes=1):
    model = DeepSurv(n_features)
    clip = dict(gradient_clip_val=1.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305
    trainer = pl.Trainer(max_epochs=max_epochs, devices=devices, num_nodes=num_nodes, strategy="ddp", **clip,
                         callbacks=[ParquetPrefetchPacer(),
                                    pl.callbacks.EarlyStopping("val/c_index", mode="max", patience=8)])
    trainer.fit(model, datamodule=datamodule)
    return model
