# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""LightningModule for ImageNet classification with a torchvision backbone."""
import os
import random
import signal

import torch
import torch.nn.functional as F
import pytorch_lightning as pl
import torchvision


class ImageNetClassifier(pl.LightningModule):
    def __init__(self, arch="resnet50", lr=0.4, epochs=90, steps_per_epoch=5000):
        super().__init__()
        self.save_hyperparameters()
        self.net = getattr(torchvision.models, arch)(weights=None)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        if random.random() < 2e-5:
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True)  # ok: MLS306
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9,
                              weight_decay=1e-4, nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
            opt, max_lr=self.hparams.lr, epochs=self.hparams.epochs,
            steps_per_epoch=self.hparams.steps_per_epoch)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def build_trainer(num_nodes=4):
    pl.seed_everything(42, workers=True)  # ok: MLS301
    return pl.Trainer(accelerator="gpu", devices=8, num_nodes=num_nodes, strategy="ddp",
                      max_epochs=90, precision="16-mixed", gradient_clip_val=1.0)
