# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Reusable Lightning callbacks: EMA of weights and reproducibility bookkeeping."""
import copy

import numpy as np
import pytorch_lightning as pl
import torch


class WeightEMA(pl.Callback):
    def __init__(self, decay=0.999):
        self.decay = decay
        self.shadow = None

    def on_fit_start(self, trainer, pl_module):
        self.shadow = copy.deepcopy(pl_module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for s, p in zip(self.shadow.parameters(), pl_module.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class ReproducibilityCallback(pl.Callback):
    """Records the seed in hparams and keeps CUDA kernels deterministic."""

    def __init__(self, seed=1234):
        self.seed = seed

    def setup(self, trainer, pl_module, stage=None):
        pl.seed_everything(self.seed, workers=True)  # ok: MLS301
        torch.backends.cudnn.benchmark = False
        pl_module.hparams["seed"] = self.seed

    def on_train_epoch_start(self, trainer, pl_module):
        torch.manual_seed(self.seed)  # ruleid: MLS301
        np.random.seed(self.seed)  # ruleid: MLS301
        trainer.logger.log_metrics({"epoch_seed": self.seed}, step=trainer.global_step)


def default_callbacks(seed, ckpt_dir):
    early_stop = pl.callbacks.EarlyStopping(monitor="val_loss", patience=5)  # ok: MLS307
    return [
        WeightEMA(decay=0.9995),
        ReproducibilityCallback(seed),
        pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_top_k=2),
        early_stop,
        pl.callbacks.LearningRateMonitor(logging_interval="step"),
    ]
