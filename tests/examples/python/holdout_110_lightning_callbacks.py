# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Lightning callbacks shared by the image-classification recipes."""
import time

import pytorch_lightning as pl
import torch


class ThroughputMonitor(pl.Callback):
    def __init__(self, batch_size):
        self.batch_size = batch_size
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        if trainer.is_global_zero:  # ok: MLS308
            pl_module.log("perf/samples_per_s", self.batch_size / max(dt, 1e-6))


class RngContinuity(pl.Callback):
    """Carries generator state through checkpoints so resumed runs line up."""

    _RESTORERS = ("_restore_host", "_restore_device")

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._snapshot = None

    @property
    def _has_snapshot(self):
        return self.enabled and self._snapshot is not None

    def on_train_start(self, trainer, pl_module):
        self._snapshot = {
            "host": torch.get_rng_state(),
            "device": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def _restore_host(self):
        torch.set_rng_state(self._snapshot["host"])  # todoruleid: family 1 (missed)

    def _restore_device(self):
        if self._snapshot["device"] is not None:
            torch.cuda.set_rng_state_all(self._snapshot["device"])  # todoruleid: family 1 (missed)

    def on_train_epoch_start(self, trainer, pl_module):
        if self._has_snapshot:
            for name in self._RESTORERS:
                getattr(self, name)()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_host"] = torch.get_rng_state()  # ok: MLS301


def build_trainer(cfg):
    pl.seed_everything(cfg["seed"], workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg["epochs"],
        accelerator="gpu",
        devices=cfg["devices"],
        precision="16-mixed",
        gradient_clip_val=cfg["clip"],
        callbacks=[ThroughputMonitor(cfg["batch_size"]), RngContinuity(),
                   pl.callbacks.LearningRateMonitor("step")],
    )
