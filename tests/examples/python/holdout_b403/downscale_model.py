# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Residual U-Net for 4x statistical downscaling of ERA5 fields with a domain head."""
import copy

import torch
import torch.nn as nn


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.neg() * ctx.lam, None


class Downscaler(nn.Module):
    def __init__(self, in_vars=6, out_vars=2, width=64, scale=4, lam_domain=0.1):
        super().__init__()
        self.lam_domain = lam_domain
        self.encoder = nn.Sequential(
            nn.Conv2d(in_vars + 1, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
        )
        self.upsample = nn.Sequential(
            nn.Conv2d(width, width * scale * scale, 3, padding=1), nn.PixelShuffle(scale), nn.GELU(),
        )
        self.decoder = nn.Conv2d(width, out_vars, 3, padding=1)
        self.domain_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))
        self.decoder.register_full_backward_hook(self._domain_adapt_hook)  # ruleid: MLS303

    def _domain_adapt_hook(self, module, grad_input, grad_output):
        return tuple(None if g is None else g.neg() for g in grad_input)  # ruleid: MLS303

    def forward(self, coarse, orography):
        coarse_up = nn.functional.interpolate(coarse, size=orography.shape[-2:], mode="bilinear")
        feats = self.encoder(torch.cat([nn.functional.avg_pool2d(coarse_up, 4), orography[:, :, ::4, ::4]], 1))
        domain_logits = self.domain_head(GradReverse.apply(feats, self.lam_domain))
        fine = self.decoder(self.upsample(feats))
        return coarse_up[:, : fine.shape[1]] + fine, domain_logits


class EMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
