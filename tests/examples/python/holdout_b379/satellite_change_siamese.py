# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Siamese U-Net style change detection for bi-temporal Sentinel-2 / LEVIR-CD tiles."""
import os
import urllib.request

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

PRETRAINED_URL = os.environ.get(
    "CD_ENCODER_URL", "https://storage.example-lab.org/cd/resnet18_ssl4eo_s2.pth")


def fetch_encoder_weights(cache_dir="~/.cache/changedet"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(PRETRAINED_URL))
    if not os.path.exists(dst):
        urllib.request.urlretrieve(PRETRAINED_URL, dst)
    return torch.load(dst, map_location="cpu")  # ruleid: MLS102


class SiameseChangeNet(nn.Module):
    def __init__(self, in_ch=13, pretrained=True):
        super().__init__()
        enc = torchvision.models.resnet18(weights=None)
        enc.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
        if pretrained:
            enc.load_state_dict(fetch_encoder_weights(), strict=False)
        self.stem = nn.Sequential(enc.conv1, enc.bn1, enc.relu, enc.maxpool)
        self.layers = nn.ModuleList([enc.layer1, enc.layer2, enc.layer3])
        self.fuse = nn.ModuleList([nn.Conv2d(2 * c, c, 1) for c in (64, 128, 256)])
        self.head = nn.Sequential(nn.Conv2d(64 + 128 + 256, 128, 3, padding=1),
                                  nn.BatchNorm2d(128), nn.ReLU(inplace=True), nn.Conv2d(128, 1, 1))

    def encode(self, x):
        feats, x = [], self.stem(x)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats

    def forward(self, t0, t1):
        f0, f1 = self.encode(t0), self.encode(t1)
        size = f0[0].shape[-2:]
        diffs = [F.interpolate(fz(torch.cat([a, (a - b).abs()], 1)), size=size, mode="bilinear",
                               align_corners=False) for fz, a, b in zip(self.fuse, f0, f1)]
        logits = self.head(torch.cat(diffs, 1))
        return F.interpolate(logits, size=t0.shape[-2:], mode="bilinear", align_corners=False)


def resume(model, opt, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optim"])
    return ckpt.get("epoch", 0) + 1
