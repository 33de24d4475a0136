# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Lightning callbacks for the county-level crop yield model (Sentinel-2/MODIS time series)."""
import logging
import os
import signal
import time

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class PreemptionCheckpoint(pl.Callback):
    """Save a resumable checkpoint when the scheduler sends SIGUSR1/SIGTERM."""

    def __init__(self, dirpath):
        self.dirpath = dirpath
        self._requested = False

    def setup(self, trainer, pl_module, stage=None):
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._flag)  # ok: MLS307

    def _flag(self, signum, frame):
        log.warning("received signal %d, checkpointing at next batch boundary", signum)
        self._requested = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._requested:
            trainer.save_checkpoint(os.path.join(self.dirpath, "preempt.ckpt"))
            trainer.should_stop = True
            self._requested = False


class TilePrefetchThrottle(pl.Callback):
    """Spread remote tile reads so the shared GCS bucket does not rate-limit the job."""

    def __init__(self, every_n_batches=4, pause_s=1.5):
        self.every = every_n_batches
        self.pause_s = pause_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.world_size > 1 and trainer.global_rank == trainer.world_size - 1 and batch_idx % self.every == 0:
            time.sleep(self.pause_s * trainer.world_size)  # ruleid: MLS307


class YieldMetricsLogger(pl.Callback):
    def on_validation_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        if trainer.is_global_zero and "val_rmse" in m:
            log.info("epoch %d val RMSE %.3f t/ha, R2 %.3f", trainer.current_epoch,
                     float(m["val_rmse"]), float(m.get("val_r2", float("nan"))))
