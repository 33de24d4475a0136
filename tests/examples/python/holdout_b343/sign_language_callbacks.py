# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Lightning callbacks for continuous sign language recognition (CTC over gloss sequences)."""
import logging

import pytorch_lightning as pl
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


class GlossWERMonitor(pl.Callback):
    """Tracks WER on the dev split and keeps the decoded hypotheses of the best epoch."""

    def __init__(self, blank_id=0, patience_epochs=8):
        self.blank_id = blank_id
        self.patience_epochs = patience_epochs
        self.best_wer = float("inf")
        self.stale_epochs = 0

    def on_validation_epoch_end(self, trainer, pl_module):
        wer = trainer.callback_metrics.get("dev/wer")
        if wer is None:
            return
        wer = float(wer)
        if wer < self.best_wer:
            self.best_wer, self.stale_epochs = wer, 0
        else:
            self.stale_epochs += 1
        if trainer.is_global_zero:  # ok: MLS307
            log.info("epoch %d dev WER %.2f (best %.2f)", trainer.current_epoch, wer, self.best_wer)
        if self.stale_epochs >= self.patience_epochs:
            trainer.should_stop = True


class FeatureMemoryCallback(pl.Callback):
    """Releases cached visual features between epochs to bound host memory."""

    def __init__(self, release_every=2):
        self.release_every = release_every

    def on_train_epoch_end(self, trainer, pl_module):
        cache = getattr(trainer.datamodule, "feature_cache", None)
        if cache is not None and trainer.current_epoch % self.release_every == 0:
            cache.clear()
            torch.cuda.empty_cache()
        if dist.is_initialized() and trainer.current_epoch >= 3 and trainer.global_rank == trainer.world_size - 1:
            dist.destroy_process_group()  # ruleid: MLS307
