# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Lightning callbacks shared by the vision experiments."""
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only


class ThroughputMonitor(pl.Callback):
    def __init__(self, log_every: int = 50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            self._t0 = time.perf_counter()  # ok: MLS301

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is not None and batch_idx % self.log_every == 0:
            n = batch[0].shape[0] * trainer.world_size
            pl_module.log("imgs_per_sec", n / (time.perf_counter() - self._t0), rank_zero_only=True)


class CudnnWarmup(pl.Callback):
    """Keeps cudnn autotuning stable across epochs with variable-size final batches."""

    def __init__(self, deterministic_eval: bool = True):
        self.deterministic_eval = deterministic_eval

    def on_train_epoch_start(self, trainer, pl_module):
        torch.backends.cudnn.benchmark = True
        torch.cuda.manual_seed_all(trainer.current_epoch % 2)  # ruleid: MLS301

    def on_validation_epoch_start(self, trainer, pl_module):
        if self.deterministic_eval:
            torch.backends.cudnn.benchmark = False


class BestCheckpointNote(pl.Callback):
    @rank_zero_only  # ok: MLS307
    def on_validation_end(self, trainer, pl_module):
        score = trainer.callback_metrics.get("val_acc")
        if score is not None:
            print(f"epoch {trainer.current_epoch}: val_acc={float(score):.4f}")


def default_callbacks(patience: int = 10):
    return [
        ThroughputMonitor(),
        CudnnWarmup(),
        BestCheckpointNote(),
        pl.callbacks.EarlyStopping(monitor="val_acc", mode="max", patience=patience),  # ok: MLS307
        pl.callbacks.LearningRateMonitor(logging_interval="step"),
    ]
