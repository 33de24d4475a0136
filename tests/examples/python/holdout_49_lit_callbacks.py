# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Lightning callbacks shared by the ViT fine-tuning recipes."""
import math
import time

import torch
import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._seen += batch[0].shape[0]

    def on_train_epoch_end(self, trainer, pl_module):
        dt = max(time.perf_counter() - self._t0, 1e-6)
        pl_module.log("perf/samples_per_sec", self._seen / dt, rank_zero_only=True)


class LinearWarmup(pl.Callback):
    def __init__(self, warmup_steps, base_lr):
        self.warmup_steps = warmup_steps
        self.base_lr = base_lr

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step < self.warmup_steps:
            scale = (step + 1) / self.warmup_steps
            for pg in trainer.optimizers[0].param_groups:
                pg["lr"] = self.base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305


class ResumableRNG(pl.Callback):
    """Stores the torch RNG stream so preempted runs resume reproducibly."""

    def __init__(self):
        self._state = None

    def on_train_start(self, trainer, pl_module):
        if self._state is None:
            self._state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        if self._state is not None:
            torch.set_rng_state(self._state)  # ruleid: MLS301

    def state_dict(self):
        return {"rng": self._state}

    def load_state_dict(self, state_dict):
        self._state = state_dict.get("rng")


class DivergenceGuard(pl.Callback):
    def __init__(self, patience=3):
        self.patience = patience
        self.bad = 0

    def on_validation_end(self, trainer, pl_module):
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad += 1
            if self.bad >= self.patience:
                trainer.should_stop = True  # ok: MLS307
        else:
            self.bad = 0
