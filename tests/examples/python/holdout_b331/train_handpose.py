# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Heatmap-based 21-keypoint hand pose estimation: training loop with AMP and grad monitoring."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from handpose_data import FreiHandHeatmaps  # local dataset module

NUM_KP = 21


class HandPoseNet(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(width, width, 3, padding=1),
                                                    nn.BatchNorm2d(width), nn.ReLU()) for _ in range(6)])
        self.final = nn.Conv2d(width, NUM_KP, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.final(self.blocks(self.stem(x)))


def _record(stats, name, g):
    stats[name] = g.detach().norm().item()
    return g


def attach_grad_monitor(model, stats):
    """Track per-parameter gradient norms for the dashboard (head tracked at finer scale)."""
    for name, p in model.named_parameters():
        scale = 0.02 if name.startswith("final") else 1.0
        p.register_hook(lambda g, n=name, s=scale: _record(stats, n, g).mul(s))  # todoruleid: family 2 (missed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/freihand")
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args()
    dev = torch.device("cuda")
    model = HandPoseNet().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    grad_stats = {}
    attach_grad_monitor(model, grad_stats)
    loader = DataLoader(FreiHandHeatmaps(args.root, "train"), batch_size=32, shuffle=True, num_workers=8)
    for epoch in range(args.epochs):
        for step, (img, heat) in enumerate(loader):
            img, heat = img.to(dev, non_blocking=True), heat.to(dev, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.mse_loss(model(img), heat)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            if step % 100 == 0:
                print(f"ep {epoch} step {step} loss {loss.item():.5f} head_gn {grad_stats.get('final.weight', 0):.3e}")
    torch.save(model.state_dict(), "handpose_final.pt")


if __name__ == "__main__":
    main()
