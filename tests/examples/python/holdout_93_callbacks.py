# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Lightning callbacks shared by the image and text experiments."""
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info


class EpochTimer(Callback):
    """Logs wall-clock time per training epoch."""

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.time()
        torch.manual_seed(int(self._t0))  # ruleid: MLS301

    def on_train_epoch_end(self, trainer, pl_module):
        elapsed = time.time() - self._t0
        pl_module.log("perf/epoch_time_s", elapsed, sync_dist=True)
        rank_zero_info(f"epoch {trainer.current_epoch} took {elapsed:.1f}s")  # ok: MLS306


class GradNormLogger(Callback):
    """Logs the global L2 norm of the gradients before each optimizer step."""

    def __init__(self, every_n_steps=50):
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step % self.every_n_steps:
            return
        norms = [p.grad.detach().norm(2) for p in pl_module.parameters() if p.grad is not None]
        if norms:
            total = torch.norm(torch.stack(norms), 2)
            pl_module.log("train/grad_norm", total)


def build_callbacks(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    early_stop = EarlyStopping(monitor="val/loss", patience=cfg.patience, mode="min")  # ok: MLS307
    return [
        ModelCheckpoint(dirpath=cfg.ckpt_dir, monitor="val/loss", mode="min", save_top_k=2),
        early_stop,
        LearningRateMonitor(logging_interval="step"),
        EpochTimer(),
        GradNormLogger(every_n_steps=cfg.log_every),
    ]
