# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Lightning module for unsupervised deformable MR-to-MR registration (VoxelMorph-style)."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import lightning.pytorch as pl


def ncc_loss(a, b, win=9, eps=1e-5):
    k = torch.ones(1, 1, win, win, win, device=a.device) / win ** 3
    mu_a, mu_b = F.conv3d(a, k, padding=win // 2), F.conv3d(b, k, padding=win // 2)
    va = F.conv3d(a * a, k, padding=win // 2) - mu_a ** 2
    vb = F.conv3d(b * b, k, padding=win // 2) - mu_b ** 2
    cov = F.conv3d(a * b, k, padding=win // 2) - mu_a * mu_b
    return -(cov * cov / (va * vb + eps)).mean()


def smoothness(flow):
    dz, dy, dx = (flow.diff(dim=d).pow(2).mean() for d in (2, 3, 4))
    return (dx + dy + dz) / 3


class Registration(pl.LightningModule):
    def __init__(self, unet, lam=1.0, lr=1e-4, ema_decay=0.998):
        super().__init__()
        self.unet = unet
        self.flow = nn.Conv3d(16, 3, kernel_size=3, padding=1)
        nn.init.normal_(self.flow.weight, mean=0.0, std=1e-5)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.flow.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        self.ema = copy.deepcopy(nn.ModuleList([self.unet, self.flow])).requires_grad_(False)
        self.lam, self.lr, self.ema_decay = lam, lr, ema_decay

    def warp(self, moving, flow):
        b, _, d, h, w = moving.shape
        grid = F.affine_grid(torch.eye(3, 4, device=moving.device)[None].expand(b, -1, -1),
                             moving.shape, align_corners=True)
        scale = torch.tensor([w - 1, h - 1, d - 1], device=moving.device) / 2
        return F.grid_sample(moving, grid + flow.permute(0, 2, 3, 4, 1).flip(-1) / scale,
                             align_corners=True)

    def training_step(self, batch, _):
        fixed, moving = batch
        flow = self.flow(self.unet(torch.cat([moving, fixed], 1)))
        sim, reg = ncc_loss(self.warp(moving, flow), fixed), smoothness(flow)
        self.log_dict({"train/ncc": sim, "train/smooth": reg}, prog_bar=True, sync_dist=True)  # ok: MLS306
        return sim + self.lam * reg

    def on_train_batch_end(self, outputs, batch, batch_idx):
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), [*self.unet.parameters(), *self.flow.parameters()]):
                e.lerp_(p, 1.0 - self.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def configure_optimizers(self):
        params = [*self.unet.parameters(), *self.flow.parameters()]
        return torch.optim.Adam(params, lr=self.lr)


def fit(unet, datamodule, max_epochs=300):
    pl.seed_everything(42, workers=True)  # ok: MLS301
    trainer = pl.Trainer(max_epochs=max_epochs, precision="bf16-mixed", gradient_clip_val=1.0)
    trainer.fit(Registration(unet), datamodule=datamodule)
    return trainer
