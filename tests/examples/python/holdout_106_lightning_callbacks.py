# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Lightning callbacks shared by the segmentation experiments."""
import random

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

STREAMS = {
    "torch": (torch.get_rng_state, torch.set_rng_state),
    "numpy": (np.random.get_state, np.random.set_state),
    "python": (random.getstate, random.setstate),
}


class RNGCheckpoint(pl.Callback):
    """Keeps the RNG streams next to the weights so resumed runs stay bit-exact."""

    def __init__(self, streams=STREAMS):
        self.streams = streams
        self.snapshot = {}

    def on_fit_start(self, trainer, pl_module):
        self.snapshot = {name: get() for name, (get, _) in self.streams.items()}

    def on_train_epoch_start(self, trainer, pl_module):
        for name, (_, put) in self.streams.items():
            put(self.snapshot[name])  # ruleid: MLS301

    def state_dict(self):
        return {"snapshot": self.snapshot}

    def load_state_dict(self, state_dict):
        self.snapshot = state_dict.get("snapshot", self.snapshot)


class EpochSummary(pl.Callback):
    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        line = " ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items()))
        print(f"epoch {trainer.current_epoch}: {line}")  # ok: MLS306


def default_callbacks(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return [
        RNGCheckpoint(),
        EarlyStopping(monitor="val/miou", mode="max", patience=cfg.patience),  # ok: MLS307
        ModelCheckpoint(monitor="val/miou", mode="max", save_top_k=2, save_last=True),
        LearningRateMonitor(logging_interval="step"),
        EpochSummary(),
    ]


def build_trainer(cfg):
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator="gpu",
        devices=cfg.devices,
        strategy="ddp" if cfg.devices > 1 else "auto",
        precision="16-mixed",
        gradient_clip_val=1.0,
        callbacks=default_callbacks(cfg),
    )
