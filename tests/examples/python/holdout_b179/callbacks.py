# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Lightning callbacks shared by the segmentation and classification experiments."""
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class ThroughputMonitor(pl.Callback):
    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        n = batch[0].shape[0]
        pl_module.log("perf/samples_per_sec", n / max(dt, 1e-6), rank_zero_only=True)  # ok: MLS306
        self._t0 = None


class RNGStateKeeper(pl.Callback):
    """Stores torch RNG streams in checkpoints so resumed runs are reproducible."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_fit_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": torch.get_rng_state()}

    def load_state_dict(self, state_dict):
        torch.set_rng_state(state_dict["cpu"])  # ok: MLS301


def default_callbacks(cfg):
    stopper = EarlyStopping(monitor="val/dice", mode="max", patience=cfg.patience)  # ok: MLS307
    return [
        ModelCheckpoint(dirpath=cfg.ckpt_dir, monitor="val/dice", mode="max", save_top_k=2,
                        save_last=True),
        stopper,
        LearningRateMonitor(logging_interval="step"),
        RNGStateKeeper(),
        ThroughputMonitor(log_every=cfg.log_every),
    ]
