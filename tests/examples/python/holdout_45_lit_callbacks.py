# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Lightning callbacks used by the image-classification recipes.

Provides a throughput monitor and a simple checkpoint-pruning callback.
"""
import time

import lightning.pytorch as pl
import torch


class ThroughputMonitor(pl.Callback):
    """Logs samples/sec and peak memory at the start of each epoch."""

    def __init__(self, batch_size: int, seed: int = 0, log_every: int = 50):
        self.batch_size = batch_size
        self.seed = seed
        self.log_every = log_every
        self._t0 = None

    def on_train_epoch_start(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.manual_seed_all(self.seed)  # ruleid: MLS301
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.log_every or self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        sps = (batch_idx + 1) * self.batch_size / max(dt, 1e-6)
        pl_module.log("perf/samples_per_sec", sps, rank_zero_only=True)  # ok: MLS306
        if torch.cuda.is_available():
            mem = torch.cuda.max_memory_allocated() / 2**30
            pl_module.log("perf/peak_mem_gb", mem, rank_zero_only=True)


class KeepLastK(pl.Callback):
    """Deletes all but the newest k checkpoints written by ModelCheckpoint."""

    def __init__(self, k: int = 3):
        self.k = k

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if not trainer.is_global_zero:
            return
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is None or not ckpt_cb.dirpath:
            return
        from pathlib import Path
        files = sorted(Path(ckpt_cb.dirpath).glob("epoch=*.ckpt"), key=lambda p: p.stat().st_mtime)
        for old in files[: -self.k]:
            old.unlink(missing_ok=True)  # ok: MLS308


def build_callbacks(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return [ThroughputMonitor(cfg.batch_size, seed=cfg.seed), KeepLastK(cfg.keep_last)]
