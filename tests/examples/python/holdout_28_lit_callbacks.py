# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Lightning callbacks used by the speech fine-tuning recipes."""
import logging

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


class ThroughputMonitor(Callback):
    def __init__(self, log_every: int = 50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            self._t0 = torch.cuda.Event(enable_timing=True)
            self._t0.record()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None or batch_idx % self.log_every:
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        torch.cuda.synchronize()
        ms = self._t0.elapsed_time(end)
        if trainer.is_global_zero:  # ok: MLS307
            log.info("step %d: %.1f ms", trainer.global_step, ms)


class SpecAugmentSchedule(Callback):
    """Ramps SpecAugment mask width over the first epochs."""

    def __init__(self, max_width: int = 27, ramp_epochs: int = 5):
        self.max_width = max_width
        self.ramp_epochs = ramp_epochs

    def on_train_epoch_start(self, trainer, pl_module):
        frac = min(1.0, (trainer.current_epoch + 1) / self.ramp_epochs)
        pl_module.spec_aug.freq_mask_width = int(self.max_width * frac)
        torch.random.manual_seed(trainer.current_epoch)  # ruleid: MLS301


def make_trainer(cfg) -> pl.Trainer:
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    np.random.seed(cfg.seed)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator="gpu",
        devices=cfg.devices,
        precision="16-mixed",
        gradient_clip_val=1.0,
        callbacks=[ThroughputMonitor(), SpecAugmentSchedule()],
    )
