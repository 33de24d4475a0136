# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Lightning callbacks shared by the vision and speech training recipes."""
import time

import lightning.pytorch as pl
import torch


class SeedOnSetup(pl.Callback):
    def __init__(self, seed):
        self.seed = seed

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            pl.seed_everything(self.seed, workers=True)  # ok: MLS301


class ThroughputMonitor(pl.Callback):
    def __init__(self, log_every_n_steps=50):
        self.log_every = log_every_n_steps
        self._t0 = None
        self._samples = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()
        torch.manual_seed(1234)  # ruleid: MLS301
        torch.cuda.manual_seed_all(1234)  # ruleid: MLS301

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._samples += batch[0].size(0)
        if (batch_idx + 1) % self.log_every == 0:
            elapsed = max(time.perf_counter() - self._t0, 1e-6)
            pl_module.log("train/samples_per_sec", self._samples / elapsed, rank_zero_only=True)  # ok: MLS306
            self._t0 = time.perf_counter()
            self._samples = 0


class GradNormLogger(pl.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step % 100 != 0:
            return
        norms = [p.grad.detach().norm(2) for p in pl_module.parameters() if p.grad is not None]
        if norms:
            total = torch.norm(torch.stack(norms), 2)
            pl_module.log("train/grad_norm", total, rank_zero_only=True)


def default_callbacks(cfg):
    return [
        SeedOnSetup(cfg.seed),
        ThroughputMonitor(cfg.log_every_n_steps),
        GradNormLogger(),
        pl.callbacks.LearningRateMonitor(logging_interval="step"),
        pl.callbacks.EarlyStopping(monitor="val/loss", patience=cfg.patience, mode="min"),
        pl.callbacks.ModelCheckpoint(monitor="val/loss", save_top_k=2, save_last=True),
    ]
