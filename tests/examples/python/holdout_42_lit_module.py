# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""LightningModule for image classification with EMA weights, mixup and linear warmup."""
import copy
import math

import torch
import torch.nn.functional as F
import lightning.pytorch as pl


class Classifier(pl.LightningModule):
    def __init__(self, net, num_classes: int, lr: float = 1e-3, warmup: int = 1000,
                 total: int = 100000, ema_decay: float = 0.9998, mixup_alpha: float = 0.2):
        super().__init__()
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False)
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = True

    def _lr_at(self, step: int) -> float:
        h = self.hparams
        if step < h.warmup:
            return h.lr * (step + 1) / h.warmup
        p = (step - h.warmup) / max(1, h.total - h.warmup)
        return 0.5 * h.lr * (1 + math.cos(math.pi * min(1.0, p)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        y1 = F.one_hot(y, self.hparams.num_classes).float()
        lam = float(torch.distributions.Beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha).sample())
        perm = torch.randperm(x.size(0), device=x.device)
        x = lam * x + (1 - lam) * x[perm]
        y1 = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
        loss = torch.sum(-y1 * F.log_softmax(self.net(x), -1), -1).mean()
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        for g in optimizer.param_groups:
            g["lr"] = self._lr_at(self.global_step)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step(closure=optimizer_closure)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.ema(x).argmax(-1) == y).float().mean()
        self.log("val/acc_ema", acc, sync_dist=True)  # ok: MLS306

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=0.05)
