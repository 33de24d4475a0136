# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""LightningModule and callbacks for the ViT-tiny experiments (configs/model/vit_tiny.yaml)."""
import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback


class LitClassifier(pl.LightningModule):
    def __init__(self, backbone, num_classes=100, lr=3e-4, wd=0.05, label_smoothing=0.1,
                 warmup_steps=500, max_steps=50_000):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.backbone(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.backbone(x)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.wd)

        def lr_lambda(step):
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            t = (step - hp.warmup_steps) / max(1, hp.max_steps - hp.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ResumeAlignedAug(Callback):
    """Keeps the augmentation stream aligned between resumed and uninterrupted runs
    (reviewer 2 asked for bitwise-comparable curves in the appendix)."""

    def __init__(self, seed):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module):
        torch.manual_seed(self.seed + trainer.global_rank)  # ruleid: MLS301


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(max_steps=cfg.max_steps, precision="bf16-mixed", devices=cfg.devices,
                      gradient_clip_val=1.0, callbacks=[ResumeAlignedAug(cfg.seed)],
                      log_every_n_steps=50)
