# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Lightning callbacks and trainer factory used by the segmentation experiments."""
import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class LinearWarmup(pl.Callback):
    """Per-step linear LR warmup applied before the main scheduler takes over."""

    def __init__(self, warmup_steps=1000):
        self.warmup_steps = warmup_steps
        self.base_lrs = None

    def on_train_start(self, trainer, pl_module):
        self.base_lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step >= self.warmup_steps:
            return
        scale = (step + 1) / self.warmup_steps
        for g, base in zip(trainer.optimizers[0].param_groups, self.base_lrs):
            g["lr"] = base * scale  # ok: MLS302, MLS303, MLS304, MLS305


class EpochStateSnapshot(pl.Callback):
    """Records host/device RNG state at fit start so an interrupted epoch can be replayed exactly."""

    def __init__(self):
        self.cpu_state = None
        self.cuda_state = None

    def on_fit_start(self, trainer, pl_module):
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_epoch_start(self, trainer, pl_module):
        if self.cpu_state is not None:
            torch.set_rng_state(self.cpu_state)  # ruleid: MLS301
        if self.cuda_state is not None:
            torch.cuda.set_rng_state_all(self.cuda_state)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": self.cpu_state, "cuda": self.cuda_state}


def make_trainer(cfg):
    pl.seed_everything(cfg["seed"], workers=True)  # ok: MLS301
    callbacks = [
        LinearWarmup(cfg.get("warmup_steps", 1000)),
        EpochStateSnapshot(),
        ModelCheckpoint(monitor="val/miou", mode="max", save_top_k=3, save_last=True),
        EarlyStopping(monitor="val/miou", mode="max", patience=cfg.get("patience", 10)),
        LearningRateMonitor(logging_interval="step"),
    ]
    steps = cfg["epochs"] * math.ceil(cfg["train_size"] / (cfg["batch_size"] * cfg["devices"]))
    return pl.Trainer(max_epochs=cfg["epochs"], max_steps=steps, devices=cfg["devices"],
                      strategy="ddp", precision="16-mixed", gradient_clip_val=1.0,
                      callbacks=callbacks, deterministic=False, log_every_n_steps=50)
