# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Lightning callbacks shared by the segmentation experiments."""
import time

import torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only


class ThroughputMonitor(pl.Callback):
    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            self._t0 = time.perf_counter()

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.log_every == 0 and self._t0 is not None:
            dt = time.perf_counter() - self._t0
            pl_module.log("perf/step_time", dt, rank_zero_only=True)  # ok: MLS306


class RNGStateKeeper(pl.Callback):
    """Stores the torch RNG stream in checkpoints so resumed runs continue it."""

    def on_fit_start(self, trainer, pl_module):
        self._state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._state)  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])  # ok: MLS301


def default_callbacks(out_dir, patience=10):
    return [
        ThroughputMonitor(),
        RNGStateKeeper(),
        EarlyStopping(monitor="val/miou", mode="max", patience=patience),  # ok: MLS307
        ModelCheckpoint(dirpath=out_dir, monitor="val/miou", mode="max", save_top_k=2),
    ]
