# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""LightningModule for ViT fine-tuning with warmup-cosine schedule."""
import math

import pytorch_lightning as pl
import torch
import torch.nn as nn
import timm
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class ViTClassifier(pl.LightningModule):
    def __init__(self, num_classes=100, lr=3e-4, warmup=1000, total=50000, smoothing=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model("vit_small_patch16_224", pretrained=True, num_classes=num_classes)
        self.crit = nn.CrossEntropyLoss(label_smoothing=smoothing)  # ok: MLS309

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.crit(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # ok: MLS306
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"val/loss": self.crit(logits, y), "val/acc": acc}, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=0.05)

        def lr_lambda(step):
            if step < hp.warmup:
                return (step + 1) / hp.warmup
            t = (step - hp.warmup) / max(1, hp.total - hp.warmup)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main(dm, seed=17):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    trainer = pl.Trainer(
        max_steps=50000,
        precision="16-mixed",
        gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        callbacks=[
            ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2),
            EarlyStopping(monitor="val/acc", mode="max", patience=8),  # ok: MLS307
            LearningRateMonitor("step"),
        ],
    )
    trainer.fit(ViTClassifier(), datamodule=dm)
