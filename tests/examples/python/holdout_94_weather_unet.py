# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Small U-Net for 6-hourly global forecasting on a 1.40625-degree ERA5 grid.

Input: stacked prognostic variables at t (C_in channels on a lat-lon grid);
output: the residual to add for t+6h. Loss is latitude-weighted MSE.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _block(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="circular"), nn.GroupNorm(8, c_out), nn.GELU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode="circular"), nn.GroupNorm(8, c_out), nn.GELU(),
    )


def _bound_head_grad(module, grad_input, grad_output):
    return tuple(None if g is None else g.clamp(-1e-5, 1e-5) for g in grad_input)  # ruleid: MLS302, MLS303


class ForecastUNet(nn.Module):
    def __init__(self, c_in=69, c_out=69, width=64):
        super().__init__()
        self.enc1 = _block(c_in, width)
        self.enc2 = _block(width, 2 * width)
        self.mid = _block(2 * width, 2 * width)
        self.dec2 = _block(4 * width, width)
        self.dec1 = _block(2 * width, width)
        self.head = nn.Conv2d(width, c_out, 1)
        self.apply(self._init_weights)
        self.head.register_full_backward_hook(_bound_head_grad)  # ruleid: MLS303

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        m = self.mid(e2)
        d2 = self.dec2(torch.cat([m, e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2), e1], dim=1))
        return x + self.head(d1)


def latitude_weights(n_lat, device=None):
    lats = torch.linspace(-90 + 180 / (2 * n_lat), 90 - 180 / (2 * n_lat), n_lat, device=device)
    w = torch.cos(lats * math.pi / 180.0)
    return (w / w.mean()).view(1, 1, n_lat, 1)


def weighted_mse(pred, target, lat_w, var_w=None):
    err = (pred - target) ** 2 * lat_w
    if var_w is not None:
        err = err * var_w.view(1, -1, 1, 1)
    return err.mean()
