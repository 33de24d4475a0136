# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""PyTorch Lightning module for ViT-S/16 training with EMA, mixup and linear-warmup cosine LR."""
import copy
import math

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
import timm


class ViTClassifier(L.LightningModule):
    def __init__(self, num_classes=100, lr=1e-3, warmup_steps=2000, total_steps=100_000,
                 ema_decay=0.9998, mixup_alpha=0.8, seed=0):
        super().__init__()
        self.save_hyperparameters()
        L.seed_everything(seed, workers=True)  # ok: MLS301
        self.net = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=num_classes)
        self.net.head.apply(self._init_head)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    @staticmethod
    def _init_head(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(m.bias)

    def _mixup(self, x, y):
        lam = torch.distributions.Beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha).sample().item()
        perm = torch.randperm(x.size(0), device=x.device)
        y1 = F.one_hot(y, self.hparams.num_classes).float()
        return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309

    def training_step(self, batch, batch_idx):
        x, y = batch
        x, soft = self._mixup(x, y)
        loss = torch.sum(-soft * F.log_softmax(self.net(x), dim=-1), dim=-1).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.ema(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True, prog_bar=True)  # ok: MLS306
        self.log("val/loss", F.cross_entropy(logits, y, label_smoothing=0.1), sync_dist=True)  # ok: MLS309

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        w, t = self.hparams.warmup_steps, self.hparams.total_steps

        def schedule(step):
            if step < w:
                return (step + 1) / w
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, t - w))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
