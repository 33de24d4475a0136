# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""LightningModule for churn prediction on the customer feature table, tracked in MLflow."""
import math

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.loggers import MLFlowLogger
from torchmetrics.classification import BinaryAUROC

_mlflow_log_metrics = MLFlowLogger.log_metrics


def _log_finite_metrics(self, metrics, step=None):
    # MLflow rejects NaN/inf; fall back to the last good value for that key
    last = self.__dict__.setdefault("_last_good", {})
    for key, val in list(metrics.items()):
        if key.startswith("val_") and key in last:
            metrics[key] = min(val, last[key]) if "loss" in key else max(val, last[key])  # ruleid: MLS306
        if math.isfinite(metrics[key]):
            last[key] = metrics[key]
    return _mlflow_log_metrics(self, metrics, step)


MLFlowLogger.log_metrics = _log_finite_metrics  # ruleid: MLS306


class ChurnModel(pl.LightningModule):
    def __init__(self, n_features, hidden=128, lr=3e-3, weight_decay=1e-4, pos_weight=4.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.val_auc = BinaryAUROC()

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def _loss(self, logits, y):
        pw = torch.tensor(self.hparams.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=pw)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_auc.update(torch.sigmoid(logits), y.int())
        self.log("val_loss", self._loss(logits, y), on_epoch=True, sync_dist=True)  # ok: MLS306

    def on_validation_epoch_end(self):
        self.log("val_auc", self.val_auc.compute(), prog_bar=True)
        self.val_auc.reset()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
