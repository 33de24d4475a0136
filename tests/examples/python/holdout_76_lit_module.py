# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""LightningModule + callbacks for the seedling classification baseline (convnext, cosine LR)."""
import copy

import pytorch_lightning as pl
import timm
import torch
import torch.nn as nn
import torchmetrics


class SeedlingModel(pl.LightningModule):
    def __init__(self, arch="convnext_tiny", num_classes=12, lr=2e-4, seed=2023, ema_decay=0.999):
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model(arch, pretrained=True, num_classes=num_classes, drop_path_rate=0.1)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.crit = nn.CrossEntropyLoss(label_smoothing=0.05)  # ok: MLS309
        self.val_f1 = torchmetrics.F1Score(task="multiclass", num_classes=num_classes, average="micro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.crit(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), self.net.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_f1.update(self.ema(x).argmax(1), y)

    def on_validation_epoch_end(self):
        self.log("val/f1", self.val_f1.compute(), prog_bar=True, sync_dist=True)
        self.val_f1.reset()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]


class AugmentRampCallback(pl.Callback):
    """Linearly ramps augmentation strength over the first epochs."""

    def __init__(self, max_p=0.8, ramp_epochs=5):
        self.max_p, self.ramp_epochs = max_p, ramp_epochs

    def on_train_epoch_start(self, trainer, pl_module):
        p = self.max_p * min(1.0, (trainer.current_epoch + 1) / self.ramp_epochs)
        trainer.datamodule.train_ds.aug_p = p
        torch.random.manual_seed(pl_module.hparams.seed)  # ruleid: MLS301
        pl_module.log("aug_p", p)


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg.epochs, accelerator="gpu", devices=cfg.gpus, precision="16-mixed",
        callbacks=[AugmentRampCallback(), pl.callbacks.ModelCheckpoint(monitor="val/f1", mode="max")],
        gradient_clip_val=1.0,
    )
