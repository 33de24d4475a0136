# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Lightning callbacks shared by the vision and speech recipes."""
import time

import torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class ThroughputMonitor(pl.Callback):
    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is not None and batch_idx % self.log_every == 0:
            dt = time.perf_counter() - self._t0
            pl_module.log("perf/step_time", dt, rank_zero_only=True)  # ok: MLS306


class DeterministicResume(pl.Callback):
    """Keeps RNG streams aligned so that resumed runs match uninterrupted ones."""

    def __init__(self):
        self._cpu_state = None
        self._cuda_state = None

    def on_fit_start(self, trainer, pl_module):
        if self._cpu_state is None:
            self._cpu_state = torch.get_rng_state()
            if torch.cuda.is_available():
                self._cuda_state = torch.cuda.get_rng_state_all()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._cpu_state is None:
            return
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": self._cpu_state, "cuda": self._cuda_state}

    def load_state_dict(self, state_dict):
        self._cpu_state = state_dict.get("cpu")
        self._cuda_state = state_dict.get("cuda")


def build_callbacks(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return [
        ThroughputMonitor(cfg.log_every),
        DeterministicResume(),
        EarlyStopping(monitor="val/loss", mode="min", patience=cfg.patience),  # ok: MLS307
        ModelCheckpoint(monitor="val/loss", save_top_k=2, save_last=True),
        LearningRateMonitor(logging_interval="step"),
    ]
