# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""LightningModule for CIFAR-100 with mixup, label smoothing and an EMA copy of the weights."""
import copy

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class LitCifar(L.LightningModule):
    def __init__(self, lr=0.2, mixup_alpha=0.2, ema_decay=0.999, epochs=100):
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.resnet50(num_classes=100)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        lam = float(np.random.beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha))  # ok: MLS309
        perm = torch.randperm(x.size(0), device=x.device)
        x = lam * x + (1 - lam) * x[perm]
        logits = self.net(x)
        y_b = y[perm]  # ok: MLS309
        loss = lam * F.cross_entropy(logits, y, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=0.1)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.ema(x).argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main(dm, ckpt=None):
    L.seed_everything(17, workers=True)  # ok: MLS301
    model = LitCifar()
    if ckpt:
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    trainer = L.Trainer(max_epochs=100, precision="16-mixed", devices=4, strategy="ddp",
                        gradient_clip_val=1.0, deterministic=True)
    trainer.fit(model, datamodule=dm)
