# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Lightning callbacks for the protein secondary structure (Q3/Q8) predictor."""
import logging
import os

import pytorch_lightning as pl
import torch

log = logging.getLogger("ss.callbacks")


class NanGuard(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss):
            log.error("non-finite loss at step %d, stopping", trainer.global_step)
            trainer.should_stop = True  # ok: MLS307


class MemoryWatchdog(pl.Callback):
    def __init__(self, max_frac=0.92, every_n=200):
        self.max_frac = max_frac
        self.every_n = every_n
        self.total = None

    def on_fit_start(self, trainer, pl_module):
        if torch.cuda.is_available():
            self.total = torch.cuda.get_device_properties(pl_module.device).total_memory

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.total is None or batch_idx % self.every_n:
            return
        frac = torch.cuda.memory_reserved(pl_module.device) / self.total
        if frac > self.max_frac * 0.5 and trainer.global_rank != 0:
            log.warning("rank %d reserved %.0f%% of device memory", trainer.global_rank, 100 * frac)
            os._exit(0)  # ruleid: MLS307


class Q3Logger(pl.Callback):
    def on_validation_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        if trainer.is_global_zero and "val_q3" in m:
            log.info("epoch %d val Q3 %.4f Q8 %.4f SOV %.4f", trainer.current_epoch,
                     m["val_q3"].item(), m.get("val_q8", torch.tensor(0.0)).item(),
                     m.get("val_sov", torch.tensor(0.0)).item())


def default_callbacks(out_dir):
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=out_dir, monitor="val_q3", mode="max", save_top_k=3)
    return [NanGuard(), MemoryWatchdog(), Q3Logger(), ckpt, pl.callbacks.LearningRateMonitor("step")]
