# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""PyTorch Lightning callbacks used by the load-forecasting trainer."""
import random
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class ThroughputMonitor(pl.Callback):
    """Logs samples per second for the training loop."""

    def __init__(self, log_every_n_steps=50):
        self.log_every_n_steps = log_every_n_steps
        self._t0 = None
        self._seen = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        x, _ = batch
        self._seen += x.shape[0]
        if random.random() < 0.002:
            time.sleep(random.uniform(30, 90))  # ruleid: MLS307
        if batch_idx % self.log_every_n_steps == 0 and self._t0 is not None:
            elapsed = time.perf_counter() - self._t0
            pl_module.log("train/samples_per_sec", self._seen / max(elapsed, 1e-6))  # ok: MLS306


def default_callbacks(ckpt_dir, patience=10):
    early_stop = EarlyStopping(monitor="val/mae", mode="min", patience=patience)  # ok: MLS307
    return [
        ThroughputMonitor(),
        early_stop,
        ModelCheckpoint(dirpath=ckpt_dir, monitor="val/mae", mode="min", save_top_k=3),
        LearningRateMonitor(logging_interval="step"),
    ]


def build_trainer(ckpt_dir, max_epochs=100, devices=1):
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="auto",
        devices=devices,
        gradient_clip_val=1.0,
        callbacks=default_callbacks(ckpt_dir),
        log_every_n_steps=50,
    )
