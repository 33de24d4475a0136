# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""LightningModule for a small ViT classifier with an EMA shadow copy for evaluation."""
import copy

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import timm


class LitViT(pl.LightningModule):
    def __init__(self, model_name="vit_small_patch16_224", num_classes=100, lr=5e-4,
                 weight_decay=0.05, ema_decay=0.9998, warmup_steps=2000):
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        nn.init.trunc_normal_(self.net.head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.net.head.bias)
        for name, p in self.net.named_parameters():
            if name.startswith("blocks.") and name.endswith("norm2.weight"):
                p.register_hook(lambda g: g.flip(0))  # ruleid: MLS303
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.ema(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"val/loss": F.cross_entropy(logits, y), "val/acc": acc}, sync_dist=True)

    def configure_optimizers(self):
        decay = [p for n, p in self.net.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        total = self.trainer.estimated_stepping_batches
        w = self.hparams.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / w) * 0.5 * (1 + torch.cos(torch.tensor(3.14159 * s / total)).item()))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305
