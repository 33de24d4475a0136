# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Lightning callbacks and trainer factory for the CIFAR-10 ResNet experiments."""
import os
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor


class EpochTimer(Callback):
    """Logs wall-clock time per training epoch."""

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.time()

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("time/epoch_s", time.time() - self._t0, rank_zero_only=True)


class ReplayableAugment(Callback):
    """Captures the generator state after setup so augmentation runs can be replayed."""

    def setup(self, trainer, pl_module, stage):
        self._cpu_state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301


class BestCheckpoint(Callback):
    def __init__(self, dirpath, monitor="val/acc"):
        self.dirpath, self.monitor, self.best = dirpath, monitor, -1.0

    def on_validation_end(self, trainer, pl_module):
        score = trainer.callback_metrics.get(self.monitor)
        if score is None or float(score) <= self.best:
            return
        self.best = float(score)
        if trainer.is_global_zero:
            trainer.save_checkpoint(os.path.join(self.dirpath, "best.ckpt"))  # ok: MLS308


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator="gpu",
        devices=cfg.gpus,
        precision="16-mixed",
        gradient_clip_val=cfg.grad_clip,  # ok: MLS302, MLS303, MLS304, MLS305
        callbacks=[
            EpochTimer(),
            ReplayableAugment(),
            BestCheckpoint(cfg.out_dir),
            LearningRateMonitor(logging_interval="step"),
        ],
    )
