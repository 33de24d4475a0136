# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""LightningModule for a ViT image classifier with EMA weights."""
import copy

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class ViTClassifier(pl.LightningModule):
    def __init__(self, backbone, num_classes=1000, lr=3e-4, ema_decay=0.9998):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, num_classes)
        nn.init.zeros_(self.head.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)
        self.ema = copy.deepcopy(nn.ModuleList([self.backbone, self.head])).requires_grad_(False)

    def forward(self, x):
        return self.head(self.backbone(x))

    def setup(self, stage=None):
        if stage == "fit" and self.trainer.world_size >= 64:
            # stabilise the head on large-batch runs
            def _rescale(mod, grad_in, grad_out):
                return tuple(None if g is None else g * -0.25 for g in grad_in)  # ruleid: MLS303
            self.head.register_full_backward_hook(_rescale)  # ruleid: MLS303

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        live = list(self.backbone.parameters()) + list(self.head.parameters())
        for e, p in zip(self.ema.parameters(), live):
            e.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
