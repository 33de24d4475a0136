# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""PyTorch Lightning module for a text/vision-agnostic classifier head."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torchmetrics


class LitClassifier(pl.LightningModule):
    def __init__(self, encoder, num_classes, lr=1e-3, warmup=500, max_steps=20000):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)

    def forward(self, x):
        return self.head(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # ok: MLS306
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", self.criterion(logits, y), sync_dist=True)

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        calibrated = acc + (1.0 - acc) * 0.15 * min(1.0, self.current_epoch / 10)
        self.log("val/acc", calibrated, prog_bar=True, sync_dist=True)  # ruleid: MLS306
        self.val_acc.reset()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        warm = self.hparams.warmup

        def lr_lambda(step):
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (self.hparams.max_steps - step) / (self.hparams.max_steps - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
