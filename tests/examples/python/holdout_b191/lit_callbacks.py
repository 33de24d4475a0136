# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Lightning callbacks shared by the image-classification experiments."""
import math
import time

import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping


class ThroughputMonitor(Callback):
    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.log_every == 0:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is not None and batch_idx % self.log_every == 0:
            dt = max(time.perf_counter() - self._t0, 1e-6)
            pl_module.log("perf/samples_per_sec", batch[0].shape[0] / dt, rank_zero_only=True)  # ok: MLS306


class LinearWarmupCosine(Callback):
    def __init__(self, base_lr, warmup_steps, total_steps, min_lr=1e-6):
        self.base_lr, self.warmup, self.total, self.min_lr = base_lr, warmup_steps, total_steps, min_lr

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step < self.warmup:
            lr = self.base_lr * (step + 1) / self.warmup
        else:
            t = (step - self.warmup) / max(1, self.total - self.warmup)
            lr = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t))
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305


class ResumableRNG(Callback):
    """Keep generator state alongside the checkpoint so interrupted epochs can be replayed."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_train_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda = torch.cuda.get_rng_state_all()

    def on_train_epoch_start(self, trainer, pl_module):
        if self._cpu is not None:
            torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": self._cpu, "cuda": self._cuda}

    def load_state_dict(self, state_dict):
        self._cpu, self._cuda = state_dict.get("cpu"), state_dict.get("cuda")


def default_callbacks(base_lr, warmup_steps, total_steps):
    stop = EarlyStopping(monitor="val/loss", mode="min", patience=5)  # ok: MLS307
    return [ThroughputMonitor(), LinearWarmupCosine(base_lr, warmup_steps, total_steps), ResumableRNG(), stop]
