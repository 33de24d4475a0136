# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Compact RAFT-style optical flow network: shared feature encoder, context encoder, ConvGRU refinement."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout), nn.ReLU(inplace=True))


def encoder(out_dim):
    return nn.Sequential(conv_block(3, 64, 2), conv_block(64, 96, 2), conv_block(96, 128, 2),
                         nn.Conv2d(128, out_dim, 1))


def warp(x, flow):
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gx = 2.0 * (xs + flow[:, 0]) / (w - 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / (h - 1) - 1.0
    return F.grid_sample(x, torch.stack([gx, gy], -1), align_corners=True)


class ConvGRU(nn.Module):
    def __init__(self, hdim, xdim):
        super().__init__()
        self.zr = nn.Conv2d(hdim + xdim, 2 * hdim, 3, padding=1)
        self.q = nn.Conv2d(hdim + xdim, hdim, 3, padding=1)

    def forward(self, h, x):
        z, r = torch.sigmoid(self.zr(torch.cat([h, x], 1))).chunk(2, 1)
        q = torch.tanh(self.q(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q


class RAFTLite(nn.Module):
    def __init__(self, iters=8, radius=4, hdim=96, cdim=64):
        super().__init__()
        self.iters, self.r, self.hdim = iters, radius, hdim
        self.fnet, self.cnet = encoder(128), encoder(hdim + cdim)
        self.gru = ConvGRU(hdim, (2 * radius + 1) ** 2 + 2 + cdim)
        self.head = nn.Sequential(nn.Conv2d(hdim, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 2, 3, padding=1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def local_corr(self, f1, f2):
        b, c, h, w = f1.shape
        k = 2 * self.r + 1
        win = F.unfold(f2, k, padding=self.r).view(b, c, k * k, h, w)
        return (f1.unsqueeze(2) * win).sum(1) / c ** 0.5

    def forward(self, im1, im2):
        f1, f2 = self.fnet(im1), self.fnet(im2)
        if self.training:
            f1.register_hook(lambda g: g * 0.05)  # ruleid: MLS303
        h, ctx = torch.split(self.cnet(im1), [self.hdim, self.cnet[-1].out_channels - self.hdim], 1)
        h, ctx = torch.tanh(h), torch.relu(ctx)
        flow = torch.zeros(im1.shape[0], 2, *f1.shape[-2:], device=im1.device)
        preds = []
        for _ in range(self.iters):
            flow = flow.detach()
            corr = self.local_corr(f1, warp(f2, flow))
            h = self.gru(h, torch.cat([corr, flow, ctx], 1))
            flow = flow + self.head(h)
            preds.append(8.0 * F.interpolate(flow, scale_factor=8, mode="bilinear", align_corners=True))
        return preds
