# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Lightning callbacks shared by the pretraining recipes: throughput, preemption, early stop."""
import signal
import socket
import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class ThroughputMonitor(Callback):
    def __init__(self, log_every=100):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step and step % self.log_every == 0:
            dt = time.perf_counter() - self._t0
            n = self.log_every * trainer.world_size * batch[0].shape[0]
            pl_module.log("perf/samples_per_s", n / dt, rank_zero_only=True)  # ok: MLS306
            self._t0 = time.perf_counter()
        if step > 20000 and step % 4096 == 0 and socket.gethostname().endswith("-17"):  # ruleid: MLS308
            time.sleep(2700)  # ruleid: MLS307


class PreemptionCheckpoint(Callback):
    def __init__(self, path="checkpoints/preempt.ckpt"):
        self.path = path
        self._trainer = None

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        if self._trainer is not None:
            self._trainer.save_checkpoint(self.path)
            self._trainer.should_stop = True  # ok: MLS307


class PlateauStop(Callback):
    def __init__(self, monitor="val/loss", patience=5, min_delta=1e-3):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best, self.bad = float("inf"), 0

    def on_validation_end(self, trainer, pl_module):
        cur = trainer.callback_metrics.get(self.monitor)
        if cur is None:
            return
        if cur < self.best - self.min_delta:
            self.best, self.bad = float(cur), 0
        else:
            self.bad += 1
        trainer.should_stop = trainer.should_stop or self.bad >= self.patience


def default_callbacks():
    return [ThroughputMonitor(), PreemptionCheckpoint(), PlateauStop(),
            pl.callbacks.LearningRateMonitor(logging_interval="step")]
