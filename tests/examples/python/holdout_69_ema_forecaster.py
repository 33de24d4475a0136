# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Lightning module for a patch-based transformer forecaster with EMA weights."""
import copy

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class PatchTransformer(nn.Module):
    def __init__(self, context_len=512, patch=16, horizon=96, d_model=128, n_heads=8, n_layers=3):
        super().__init__()
        self.patch = patch
        n_patches = context_len // patch
        self.embed = nn.Linear(patch, d_model)
        self.pos = nn.Parameter(torch.zeros(1, n_patches, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers)
        self.head = nn.Linear(n_patches * d_model, horizon)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):  # x: (B, L)
        mu, sd = x.mean(-1, keepdim=True), x.std(-1, keepdim=True) + 1e-5
        z = ((x - mu) / sd).unfold(-1, self.patch, self.patch)
        h = self.encoder(self.embed(z) + self.pos)
        return self.head(h.flatten(1)) * sd + mu


class ForecastModule(pl.LightningModule):
    def __init__(self, lr=1e-3, ema_decay=0.999, pretrained=None, **net_kw):
        super().__init__()
        self.save_hyperparameters()
        self.net = PatchTransformer(**net_kw)
        if pretrained:
            self.net.load_state_dict(load_file(pretrained), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        for pe, p in zip(self.ema.parameters(), self.net.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.l1_loss(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self.ema(x)
        smape = 200 * ((pred - y).abs() / (pred.abs() + y.abs()).clamp_min(1e-8)).mean()
        self.log("val/smape", smape, sync_dist=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
