# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Super-resolution CNN for statistical downscaling of ERA5 2m temperature / precipitation."""
import argparse
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


class DownscaleSRCNN(nn.Module):
    def __init__(self, in_ch=3, hidden=64, n_blocks=8, scale=4):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(in_ch, hidden, 9, padding=4)
        self.body = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU())
            for _ in range(n_blocks)
        ])
        self.tail = nn.Conv2d(hidden, in_ch, 5, padding=2)

    def forward(self, coarse, orography=None):
        up = F.interpolate(coarse, scale_factor=self.scale, mode="bicubic", align_corners=False)
        x = F.gelu(self.head(up))
        x = x + self.body(x)
        return up + self.tail(x)


def stabilize_grads(model, max_abs):
    # heavy-tailed precipitation fields occasionally produce huge per-element grads
    for name, p in model.named_parameters():
        if p.requires_grad and name.startswith("body"):
            p.register_hook(lambda g, s=max_abs / p.numel(): g.clamp(-s, s))  # todoruleid: family 2 (missed)


def train_epoch(model, loader, opt, args, device):
    model.train()
    total = 0.0
    for coarse, fine in loader:
        coarse, fine = coarse.to(device), fine.to(device)
        pred = model(coarse)
        loss = F.l1_loss(pred, fine) + args.mse_weight * F.mse_loss(pred, fine)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        total += loss.item() * coarse.size(0)
    return total / len(loader.dataset)


def build(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--mse-weight", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=2e-4)
    args = p.parse_args(argv)
    model = DownscaleSRCNN(scale=args.scale)
    stabilize_grads(model, args.clip)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    return model, opt, args
