# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Lightning callbacks shared by the speech fine-tuning recipes."""
import time

import torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor


class RNGStateCallback(pl.Callback):
    """Carries the RNG streams through checkpoints so resumed runs continue where they stopped."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_fit_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_epoch_start(self, trainer, pl_module):
        if self._cpu is None:
            return
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_state"] = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint.get("rng_state")
        if state is None:
            return
        torch.set_rng_state(state["cpu"])  # ok: MLS301
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])  # ok: MLS301


class ThroughputCallback(pl.Callback):
    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t is not None and batch_idx % self.log_every == 0:
            dt = time.perf_counter() - self._t
            n = batch["input_values"].shape[0] if isinstance(batch, dict) else len(batch[0])
            pl_module.log("perf/samples_per_s", n / max(dt, 1e-6), rank_zero_only=True)  # ok: MLS306


def default_callbacks(patience=5):
    return [
        RNGStateCallback(),
        ThroughputCallback(),
        LearningRateMonitor(logging_interval="step"),
        EarlyStopping(monitor="val/wer", mode="min", patience=patience),
    ]


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(max_epochs=cfg.epochs, precision="bf16-mixed", gradient_clip_val=1.0,
                      callbacks=default_callbacks(cfg.patience), devices=cfg.devices)
