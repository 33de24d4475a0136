# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Lightning callbacks shared by the vision experiments."""
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only


class ThroughputMonitor(pl.Callback):
    """Logs samples/sec and keeps the data order reproducible across resumes."""

    def __init__(self, log_every: int = 50):
        self.log_every = log_every
        self._t0 = None
        self._rng_snapshot = None

    def on_fit_start(self, trainer, pl_module):
        self._rng_snapshot = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        if self._rng_snapshot is not None:
            torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.log_every or self._t0 is None:
            return
        elapsed = time.perf_counter() - self._t0
        n = (batch_idx + 1) * batch[0].shape[0] * trainer.world_size
        pl_module.log("perf/samples_per_sec", n / max(elapsed, 1e-6), rank_zero_only=True)


class BestScoreTracker(pl.Callback):
    def __init__(self, monitor: str = "val/acc", patience: int = 10):
        self.monitor = monitor
        self.patience = patience
        self.best = float("-inf")
        self.bad_epochs = 0

    def on_validation_epoch_end(self, trainer, pl_module):
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        if score > self.best:
            self.best, self.bad_epochs = float(score), 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            trainer.should_stop = True  # ok: MLS307
        self._report(trainer)

    @rank_zero_only
    def _report(self, trainer):  # ok: MLS308
        print(f"epoch {trainer.current_epoch}: best {self.monitor}={self.best:.4f}")


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg.epochs,
        gradient_clip_val=1.0,
        callbacks=[ThroughputMonitor(), BestScoreTracker()],
    )
