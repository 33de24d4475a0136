# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Lightning callbacks and trainer factory for the hourly load-forecasting model."""
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class ThroughputLogger(pl.Callback):
    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            dt = max(time.perf_counter() - self._t0, 1e-6)
            pl_module.log("perf/windows_per_s", batch[0].shape[0] / dt, rank_zero_only=True)


class RngSnapshot(pl.Callback):
    """Snapshot RNG streams at fit start so resumed runs see an identical stream."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_fit_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda = torch.cuda.get_rng_state_all()

    def on_train_epoch_start(self, trainer, pl_module):
        if self._cpu is not None:
            torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": self._cpu}

    def load_state_dict(self, state):
        self._cpu = state.get("cpu")


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    callbacks = [
        ThroughputLogger(),
        RngSnapshot(),
        EarlyStopping(monitor="val/smape", mode="min", patience=cfg.patience),  # ok: MLS307
        LearningRateMonitor(logging_interval="step"),
        ModelCheckpoint(monitor="val/smape", mode="min", save_top_k=2),
    ]
    return pl.Trainer(max_epochs=cfg.epochs, gradient_clip_val=1.0, callbacks=callbacks,
                      accelerator="auto", devices="auto", log_every_n_steps=25)
