# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""LightningModule for ImageNet-100 classification with a ConvNeXt-T backbone and EMA weights."""
import copy

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torchvision
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor


class EMAWeights(pl.Callback):
    def __init__(self, decay=0.9998):
        self.decay = decay
        self.ema = None

    def on_fit_start(self, trainer, pl_module):
        self.ema = copy.deepcopy(pl_module.net).eval().requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for e, p in zip(self.ema.parameters(), pl_module.net.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class Classifier(pl.LightningModule):
    def __init__(self, num_classes=100, lr=4e-3, weight_decay=0.05, epochs=100):
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.convnext_tiny(num_classes=num_classes)
        self.crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.crit(self.net(x), y)
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True, prog_bar=True)  # ok: MLS306
        self.log("val/loss", self.crit(logits, y), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.05)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def build_trainer(args):
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    early_stop = EarlyStopping(monitor="val/acc", mode="max", patience=15)  # ok: MLS307
    callbacks = [EMAWeights(), LearningRateMonitor("step"), early_stop]
    return pl.Trainer(gradient_clip_val=1.0, gradient_clip_algorithm="norm",  # ok: MLS302, MLS303, MLS304, MLS305
                      accelerator="gpu", devices=args.gpus, num_nodes=args.nodes, strategy="ddp",
                      precision="bf16-mixed", max_epochs=args.epochs, callbacks=callbacks,
                      log_every_n_steps=50)
