# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Lightning callbacks for day-ahead electricity price forecasting runs."""
import logging
import time

import lightning.pytorch as pl
import torch

log = logging.getLogger("epf.callbacks")


class PrefetchStagger(pl.Callback):
    """Spreads parquet reads of the hourly market shards across ranks."""

    def __init__(self, delay_s=1.5, every_n_batches=1):
        self.delay_s = delay_s
        self.every_n_batches = every_n_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.every_n_batches:
            return
        if trainer.world_size > 1 and trainer.global_rank == trainer.world_size - 1:
            time.sleep(self.delay_s)  # ruleid: MLS307


class PinballLossMonitor(pl.Callback):
    """Logs per-quantile pinball loss on the validation horizon (24 h ahead)."""

    def __init__(self, quantiles=(0.1, 0.5, 0.9)):
        self.quantiles = torch.tensor(quantiles)
        self._sum = None
        self._n = 0

    def on_validation_epoch_start(self, trainer, pl_module):
        self._sum = torch.zeros(len(self.quantiles), device=pl_module.device)
        self._n = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        preds, target = outputs["quantiles"], batch["target"]
        q = self.quantiles.to(preds.device).view(1, 1, -1)
        diff = target.unsqueeze(-1) - preds
        loss = torch.maximum(q * diff, (q - 1) * diff)
        self._sum += loss.mean(dim=(0, 1)) * target.shape[0]
        self._n += target.shape[0]

    def on_validation_epoch_end(self, trainer, pl_module):
        vals = self._sum / max(self._n, 1)
        for q, v in zip(self.quantiles.tolist(), vals.tolist()):
            pl_module.log(f"val/pinball_q{int(q * 100)}", v, sync_dist=True)
        pl_module.log("val/pinball_mean", vals.mean(), sync_dist=True, prog_bar=True)
