# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""Lightning callbacks: RNG isolation around validation and a throughput monitor."""
import time

import torch
import lightning.pytorch as pl


class IsolatedValidationRNG(pl.Callback):
    """Validation must not consume the training RNG streams, otherwise changing
    `val_check_interval` changes the training trajectory."""

    def __init__(self):
        self._anchor = None
        self._saved = None

    @staticmethod
    def _capture():
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return torch.get_rng_state(), cuda

    @staticmethod
    def _restore(state):
        cpu, cuda = state
        torch.set_rng_state(cpu)  # ok: MLS301
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)  # ok: MLS301

    def on_fit_start(self, trainer, pl_module):
        self._anchor = self._capture()

    def on_validation_start(self, trainer, pl_module):
        if trainer.training or trainer.state.fn == "fit":
            self._saved = self._capture()

    def on_validation_end(self, trainer, pl_module):
        if self._saved is not None:
            self._restore(self._saved)
            self._saved = None

    def on_train_epoch_start(self, trainer, pl_module):
        if self._anchor is not None:
            self._restore(self._anchor)  # ruleid: MLS301


class Throughput(pl.Callback):
    def __init__(self, every_n_steps=50):
        self.every = every_n_steps
        self._t0 = None
        self._seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._seen += batch[0].shape[0] * trainer.world_size
        if trainer.global_step and trainer.global_step % self.every == 0:
            dt = time.perf_counter() - self._t0
            pl_module.log("perf/samples_per_s", self._seen / dt, rank_zero_only=True)  # ok: MLS306
            self._t0, self._seen = time.perf_counter(), 0
