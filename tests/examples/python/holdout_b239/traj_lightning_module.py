# ruff: noqa
# Hold-out batch 239 (short files). Measured once in session 8 (round 69): 13/17 (76%) at medium+.
"""LightningModule for goal-conditioned trajectory prediction with an EMA copy of the weights for eval."""
import copy
import math

import pytorch_lightning as pl
import torch
import torch.nn as nn


class TrajPredictor(pl.LightningModule):
    def __init__(self, hidden=128, horizon=30, lr=5e-4, ema_decay=0.999):
        super().__init__()
        self.save_hyperparameters()
        self.enc = nn.GRU(4, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon * 2))
        self.apply(self._init)
        self.ema = copy.deepcopy(self).requires_grad_(False)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(m.bias)

    def forward(self, hist):
        _, h = self.enc(hist)
        return self.head(h[-1]).view(hist.size(0), -1, 2)

    def training_step(self, batch, batch_idx):
        hist, fut = batch
        theta = torch.rand(hist.size(0), device=self.device) * 2 * math.pi  # ok: MLS309
        rot = torch.stack([theta.cos(), -theta.sin(), theta.sin(), theta.cos()], -1).view(-1, 2, 2)
        hist = torch.cat([hist[..., :2] @ rot, hist[..., 2:4] @ rot], -1)
        fut = fut @ rot
        loss = nn.functional.smooth_l1_loss(self(hist), fut)
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        for pe, p in zip(self.ema.parameters(), self.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        hist, fut = batch
        pred = self.ema(hist)
        ade = (pred - fut).norm(dim=-1).mean()
        fde = (pred[:, -1] - fut[:, -1]).norm(dim=-1).mean()
        self.log_dict({"val/ade": ade, "val/fde": fde}, sync_dist=True)  # ok: MLS306

    def on_validation_epoch_end(self):
        if self.trainer.is_global_zero:  # ok: MLS308
            torch.save(self.ema.state_dict(), f"ema_epoch{self.current_epoch}.pt")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
