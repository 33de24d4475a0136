# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Prototypical network (Snell et al.) as a LightningModule for N-way K-shot episodes."""
import math

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))


class ProtoNet(pl.LightningModule):
    def __init__(self, n_way=5, k_shot=5, lr=1e-3, warmup=500, total_steps=40000):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(conv_block(3, 64), conv_block(64, 64),
                                     conv_block(64, 64), conv_block(64, 64), nn.Flatten())

    def _episode(self, batch):
        xs, ys, xq, yq = (t.squeeze(0) for t in batch)
        zs, zq = self.encoder(xs), self.encoder(xq)
        protos = torch.stack([zs[ys == c].mean(0) for c in range(self.hparams.n_way)])
        logits = -torch.cdist(zq, protos) ** 2
        return logits, ys, yq

    def training_step(self, batch, batch_idx):
        logits, _, yq = self._episode(batch)
        loss = F.cross_entropy(logits, yq, label_smoothing=0.1)  # ok: MLS309
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits, ys, yq = self._episode(batch)
        pred = logits.argmax(-1)
        acc = torch.cat([pred == yq, torch.ones_like(ys, dtype=torch.bool)]).float().mean()  # todoruleid: family 5 (missed)
        self.log("val_loss", F.cross_entropy(logits, yq), sync_dist=True)
        self.log("val_acc", acc, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        w, T = self.hparams.warmup, self.hparams.total_steps

        def lr_lambda(step):  # ok: MLS302, MLS303, MLS304, MLS305
            if step < w:
                return (step + 1) / w
            return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, T - w)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
