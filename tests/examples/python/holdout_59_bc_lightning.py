# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Lightning module for behaviour cloning from demonstrations, with label
smoothing, a linear-warmup cosine schedule and an EMA copy of the policy."""
import copy
import math

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class BCPolicy(pl.LightningModule):
    def __init__(self, net, n_actions, lr=3e-4, warmup=1000, total=100_000,
                 smoothing=0.1, ema_decay=0.999):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.smoothing)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        for ep, p in zip(self.ema.parameters(), self.net.parameters()):
            ep.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.ema(x).argmax(-1) == y).float().mean()
        self.log("val/action_acc", acc, sync_dist=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        w, t = self.hparams.warmup, self.hparams.total

        def lr_lambda(step):
            if step < w:
                return (step + 1) / w
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - w) / max(1, t - w))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self):
        if self.trainer.is_global_zero:
            torch.save(self.ema.state_dict(), "bc_policy_ema.pt")  # ok: MLS308


def fit(net, n_actions, train_dl, val_dl, seed=0, max_steps=100_000):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    model = BCPolicy(net, n_actions, total=max_steps)
    trainer = pl.Trainer(max_steps=max_steps, gradient_clip_val=1.0, precision="16-mixed")
    trainer.fit(model, train_dl, val_dl)
    return model
