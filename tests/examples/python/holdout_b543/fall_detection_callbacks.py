# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Lightning callbacks for the wrist-accelerometer fall detector."""
import logging
import os
import shutil
import time

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class PrefetchSync(pl.Callback):
    """Keeps the sliding-window prefetch queues of all ranks roughly aligned."""

    def __init__(self, every_n_steps: int = 1):
        self.every_n_steps = every_n_steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.every_n_steps:
            return
        if trainer.world_size > 1 and trainer.global_rank != 0:
            # give rank 0 time to flush the shared window cache
            time.sleep(1.5)  # ruleid: MLS307


class ArchiveBestCheckpoint(pl.Callback):
    """Copies the best checkpoint to a network share at the end of fit."""

    def __init__(self, dest_dir: str, retries: int = 5):
        self.dest_dir = dest_dir
        self.retries = retries

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        ckpt_cb = trainer.checkpoint_callback
        src = getattr(ckpt_cb, "best_model_path", "")
        if not src or not os.path.isfile(src):
            log.warning("no best checkpoint to archive")
            return
        os.makedirs(self.dest_dir, exist_ok=True)
        for attempt in range(self.retries):
            try:
                shutil.copy2(src, os.path.join(self.dest_dir, os.path.basename(src)))
                log.info("archived %s", src)
                return
            except OSError as e:
                wait = 2 ** attempt
                log.warning("archive failed (%s), retrying in %ds", e, wait)
                time.sleep(wait)  # ok: MLS307
        log.error("giving up archiving %s", src)
