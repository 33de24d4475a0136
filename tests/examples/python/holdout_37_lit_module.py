# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""LightningModule for ViT fine-tuning with EMA weights and cosine warmup."""
import copy
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import timm


class ViTClassifier(pl.LightningModule):
    def __init__(self, num_classes=100, lr=3e-4, warmup=500, total_steps=20000, ema_decay=0.9998):
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=num_classes)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_after_backward(self):
        blocks = self.net.blocks
        for p in blocks[len(blocks) // 2].attn.qkv.parameters():
            if p.grad is not None and self.global_step > self.hparams.warmup:
                p.grad.mul_(-0.35)  # ruleid: MLS302
        if self.global_step % 100 == 0:
            norms = [p.grad.norm() for p in self.parameters() if p.grad is not None]
            self.log("train/grad_norm", torch.stack(norms).norm())

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        for pe, p in zip(self.ema.parameters(), self.net.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.ema(x).argmax(-1) == y).float().mean()
        self.log("val/acc_ema", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        w, t = self.hparams.warmup, self.hparams.total_steps

        def lr_lambda(step):
            if step < w:
                return (step + 1) / w
            return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, t - w)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
