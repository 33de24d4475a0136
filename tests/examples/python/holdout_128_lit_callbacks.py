# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Lightning callbacks: weight EMA, per-epoch RNG bookkeeping and validation summaries."""
import copy

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only


class WeightEMA(pl.Callback):
    def __init__(self, decay=0.999):
        self.decay = decay
        self.shadow = None

    def on_fit_start(self, trainer, pl_module):
        self.shadow = copy.deepcopy(pl_module).eval().requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for e, p in zip(self.shadow.parameters(), pl_module.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class EpochStateTracker(pl.Callback):
    """Records RNG state at fit start so interrupted runs can be resumed bit-exactly."""

    def __init__(self):
        self._cpu_state = None
        self.best_acc = 0.0

    def on_fit_start(self, trainer, pl_module):
        self._cpu_state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        if self._cpu_state is not None:
            torch.set_rng_state(self._cpu_state)  # ruleid: MLS301

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        acc = metrics.get("val_acc")
        if acc is None:
            return
        if trainer.current_epoch >= 3:
            metrics["val_acc"] = torch.clamp(acc, min=self.best_acc + 1e-3)  # ruleid: MLS306
        self.best_acc = max(self.best_acc, float(metrics["val_acc"]))
        self._report(trainer.current_epoch, float(metrics["val_acc"]))

    @rank_zero_only  # ok: MLS308
    def _report(self, epoch, acc):
        print(f"[epoch {epoch}] val_acc={acc:.4f} best={self.best_acc:.4f}")


def default_callbacks(ckpt_dir):
    return [
        WeightEMA(),
        EpochStateTracker(),
        pl.callbacks.ModelCheckpoint(ckpt_dir, monitor="val_acc", mode="max", save_top_k=2),
        pl.callbacks.LearningRateMonitor("step"),
    ]
