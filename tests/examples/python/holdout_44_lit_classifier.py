# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""LightningModule for the ViT-S fine-tuning runs (see configs/vit_s.yaml)."""
import pytorch_lightning as pl
import timm
import torch
import torch.nn as nn


class LitClassifier(pl.LightningModule):
    def __init__(self, model_name="vit_small_patch16_224", num_classes=100, lr=3e-4,
                 warmup_steps=500, max_steps=20000, ema_decay=0.999):
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model(model_name, pretrained=True, num_classes=num_classes)
        self.crit = nn.CrossEntropyLoss(label_smoothing=0.1)
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.crit(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_after_backward(self):
        # keep the head from blowing up during the first epochs of fine-tuning
        if self.global_step > self.hparams.warmup_steps:
            for name, p in self.net.named_parameters():
                if p.grad is not None and name.startswith("blocks.1"):
                    p.grad.mul_(-0.5 if self.global_step % 3 == 0 else 1.0)  # ruleid: MLS302

    def on_before_optimizer_step(self, optimizer):
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                if v.dtype.is_floating_point:
                    self.ema[k].mul_(d).add_(v.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        warm, total = self.hparams.warmup_steps, self.hparams.max_steps

        def lr_lambda(step):
            if step < warm:
                return step / max(1, warm)
            return max(0.0, (total - step) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return [opt], [{"scheduler": sched, "interval": "step"}]
