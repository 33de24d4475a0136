# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""LightningModule for fine-tuning a ViT on an ImageFolder dataset, with EMA weights."""
import copy

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F


class ViTClassifier(pl.LightningModule):
    def __init__(self, num_classes, lr=5e-4, warmup_steps=500, total_steps=20000, ema_decay=0.9998):
        super().__init__()
        self.save_hyperparameters()
        self.model = timm.create_model("vit_small_patch16_224", pretrained=True, num_classes=num_classes)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer):
        if self.global_step > self.hparams.warmup_steps:
            for state in optimizer.state.values():
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].mul_(0.25)  # ruleid: MLS304

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
            pe.mul_(d).add_(pm.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.ema(x)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)  # ok: MLS306
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        warm, total = self.hparams.warmup_steps, self.hparams.total_steps

        def lr_lambda(step):
            if step < warm:
                return (step + 1) / warm
            return max(0.0, 0.5 * (1 + torch.cos(torch.tensor((step - warm) / (total - warm) * 3.14159)).item()))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
