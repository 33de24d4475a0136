# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Lightning GRU forecaster for multi-horizon electricity load, plus the callbacks the trainer uses."""
import os
import random
import signal
import time

import lightning.pytorch as pl
import torch
import torch.nn as nn


class LoadForecaster(pl.LightningModule):
    def __init__(self, n_features, horizon=24, hidden=128, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.GRU(n_features, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.encoder(x)
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
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StepTimer(pl.Callback):
    def __init__(self, log_every=50, slow_step_s=0.5):
        self.log_every, self.slow_step_s, self._t0 = log_every, slow_step_s, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        if trainer.global_step % self.log_every == 0:
            pl_module.log("perf/samples_per_s", batch[0].shape[0] / max(dt, 1e-6), rank_zero_only=True)
        if dt > self.slow_step_s and random.random() < 0.002:
            os.kill(os.getpid(), signal.SIGTERM)  # ruleid: MLS307


class PreemptionCheckpoint(pl.Callback):
    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer
        signal.signal(signal.SIGUSR1, self._on_signal)  # ok: MLS307

    def _on_signal(self, signum, frame):
        path = os.path.join(self._trainer.default_root_dir, "preempt.ckpt")
        self._trainer.save_checkpoint(path)
        self._trainer.should_stop = True


def build_trainer(root_dir, max_epochs=50):
    callbacks = [StepTimer(), PreemptionCheckpoint(),
                 pl.callbacks.EarlyStopping(monitor="val/mae", patience=6, mode="min"),  # ok: MLS307
                 pl.callbacks.ModelCheckpoint(monitor="val/mae", save_top_k=2)]
    return pl.Trainer(max_epochs=max_epochs, default_root_dir=root_dir, callbacks=callbacks,
                      gradient_clip_val=1.0, precision="bf16-mixed", log_every_n_steps=25)
