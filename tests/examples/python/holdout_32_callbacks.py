# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Lightning callbacks used by the image classification recipes."""
import os
import time

import pytorch_lightning as pl
import torch


class ThroughputMonitor(pl.Callback):
    """Logs samples/sec once per epoch on rank zero."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self._start = None
        self._steps = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()
        self._steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._steps += 1
        if batch_idx % 200 == 0:
            torch.cuda.manual_seed_all(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301

    def on_train_epoch_end(self, trainer, pl_module):
        elapsed = time.perf_counter() - self._start
        if trainer.is_global_zero:  # ok: MLS307
            pl_module.log("throughput", self._steps * self.batch_size / max(elapsed, 1e-6),
                          rank_zero_only=True)


class BestCheckpoint(pl.Callback):
    """Keeps the state dict with the best validation accuracy."""

    def __init__(self, path, patience=5):
        self.path = path
        self.best = -1.0
        self.patience = patience
        self.bad_epochs = 0

    def on_validation_epoch_end(self, trainer, pl_module):
        acc = trainer.callback_metrics.get("val_acc")
        if acc is None:
            return
        if acc > self.best:
            self.best = float(acc)
            self.bad_epochs = 0
            if trainer.is_global_zero:
                torch.save(pl_module.state_dict(), self.path)
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                trainer.should_stop = True  # ok: MLS307
