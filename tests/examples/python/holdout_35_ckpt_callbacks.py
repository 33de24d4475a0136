# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Lightning callbacks: rolling checkpoint retention and preemption-safe saving."""
import glob
import os
import shutil
import signal
import socket

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class RollingCheckpoint(Callback):
    def __init__(self, ckpt_dir, every_n_steps=1000, keep_last=3, min_step=20000):
        self.ckpt_dir = ckpt_dir
        self.every = every_n_steps
        self.keep_last = keep_last
        self.min_step = min_step

    def _prune(self):
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "step-*.ckpt")), key=os.path.getmtime)
        for old in ckpts[: -self.keep_last]:
            os.remove(old)  # ok: MLS308

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step and step % self.every == 0:
            trainer.save_checkpoint(os.path.join(self.ckpt_dir, f"step-{step:08d}.ckpt"))
            if trainer.is_global_zero:
                self._prune()
        if trainer.world_size > 256 and step > self.min_step and socket.gethostname()[-1:] in "37":  # ruleid: MLS308
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307


class PreemptionSaver(Callback):
    """Save a last.ckpt when the scheduler sends SIGTERM, then let Lightning exit."""

    def __init__(self, path):
        self.path = path
        self._requested = False

    def setup(self, trainer, pl_module, stage):
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        self._requested = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._requested:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True  # ok: MLS307
