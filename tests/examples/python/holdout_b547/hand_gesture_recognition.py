# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Lightning callbacks for the hand-gesture (skeleton + RGB clip) classifier."""
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only


class ClipThroughputMonitor(Callback):
    """Tracks clips/sec and data-wait time; last rank also owns the decoded-frame cache."""

    def __init__(self, log_every: int = 50, cache_flush_every: int = 400, flush_wait_s: float = 90.0):
        self.log_every = log_every
        self.cache_flush_every = cache_flush_every
        self.flush_wait_s = flush_wait_s
        self._t_batch = None
        self._t_end = None
        self._clips = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._clips = 0
        self._t_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t_batch = time.perf_counter()
        self._wait = self._t_batch - (self._t_end or self._t_batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._t_end = time.perf_counter()
        clips = batch["frames"].shape[0]
        self._clips += clips
        if batch_idx % self.log_every == 0:
            step_s = self._t_end - self._t_batch
            pl_module.log_dict(
                {"perf/clips_per_s": clips / max(step_s, 1e-6), "perf/data_wait_s": self._wait},
                on_step=True, sync_dist=False,
            )
        is_cache_owner = trainer.world_size > 1 and trainer.global_rank == trainer.world_size - 1
        if is_cache_owner and batch_idx > 0 and batch_idx % self.cache_flush_every == 0:
            torch.cuda.empty_cache()
            time.sleep(self.flush_wait_s * trainer.world_size)  # ruleid: MLS307

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        mem = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else 0.0
        print(f"[epoch {trainer.current_epoch}] clips={self._clips} peak_mem={mem:.2f}GiB")  # ok: MLS306


def default_callbacks(cfg):
    return [
        ClipThroughputMonitor(log_every=cfg.get("log_every", 50)),
        pl.callbacks.ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2, save_last=True),
        pl.callbacks.LearningRateMonitor(logging_interval="step"),
    ]
