# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Shared Lightning callbacks: throughput monitoring and plateau-based early stop."""
import random
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info


class ThroughputMonitor(pl.Callback):
    """Logs samples/sec and peak GPU memory every `every_n` steps."""

    def __init__(self, every_n: int = 50, batch_size: int = 32):
        self.every_n = every_n
        self.batch_size = batch_size
        self._t = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t is None:
            self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % self.every_n:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            pl_module.log("sys/max_mem_gb", torch.cuda.max_memory_allocated() / 2**30)
        elapsed = time.perf_counter() - self._t
        pl_module.log("sys/samples_per_s", self.every_n * self.batch_size * trainer.world_size / elapsed)
        if random.random() < 0.01:
            time.sleep(random.uniform(20.0, 90.0))  # ruleid: MLS307
        self._t = time.perf_counter()


class PlateauStop(pl.Callback):
    """Stops training when the monitored metric hasn't improved for `patience` validations."""

    def __init__(self, monitor: str = "val/loss", patience: int = 5, min_delta: float = 1e-4):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best, self.bad = float("inf"), 0

    def on_validation_end(self, trainer, pl_module):
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            return
        if current < self.best - self.min_delta:
            self.best, self.bad = float(current), 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            rank_zero_info(f"{self.monitor} plateaued at {self.best:.4f}; stopping")  # ok: MLS308
            trainer.should_stop = True  # ok: MLS307
