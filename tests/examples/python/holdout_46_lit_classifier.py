# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""LightningModule for a ViT image classifier with layer-wise warmup and cosine decay."""
import math

import pytorch_lightning as pl
import timm
import torch
import torch.nn as nn


class LitClassifier(pl.LightningModule):
    def __init__(self, model_name="vit_small_patch16_224", num_classes=100, lr=5e-4,
                 warmup_steps=2000, total_steps=100000, smoothing=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.model = timm.create_model(model_name, pretrained=True, num_classes=num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=smoothing)  # ok: MLS309

    def on_fit_start(self):
        head = self.model.get_classifier()
        for p in head.parameters():
            p.register_hook(lambda g: g.mul(-0.25))  # ruleid: MLS303

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.criterion(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True, rank_zero_only=False)

    def on_before_optimizer_step(self, optimizer):
        self.clip_gradients(optimizer, gradient_clip_val=1.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=0.05)

        def lr_lambda(step):
            if step < hp.warmup_steps:
                return step / max(1, hp.warmup_steps)
            t = (step - hp.warmup_steps) / max(1, hp.total_steps - hp.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
