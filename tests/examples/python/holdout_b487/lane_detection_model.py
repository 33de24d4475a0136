# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Row-anchor lane detector (UFLD-style) with an auxiliary segmentation branch and EMA."""
import copy
import math

import torch
import torch.nn as nn
import torchvision


class RowAnchorLaneNet(nn.Module):
    def __init__(self, num_lanes=4, num_rows=56, num_cells=100, aux_seg=True):
        super().__init__()
        resnet = torchvision.models.resnet18(weights="IMAGENET1K_V1")
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                  resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.pool = nn.Conv2d(512, 8, 1)
        self.dims = (num_cells + 1, num_rows, num_lanes)
        self.cls = nn.Sequential(nn.Linear(8 * 9 * 25, 2048), nn.ReLU(inplace=True),
                                 nn.Linear(2048, math.prod(self.dims)))
        self.aux = nn.Conv2d(512, num_lanes + 1, 1) if aux_seg else None

    def forward(self, x):
        feat = self.stem(x)
        if self.training and feat.requires_grad:
            feat.register_hook(lambda g: g.clamp(-1e-5, 1e-5))  # ruleid: MLS302, MLS303
        logits = self.cls(self.pool(feat).flatten(1)).view(-1, *self.dims)
        if self.aux is not None and self.training:
            seg = nn.functional.interpolate(self.aux(feat), size=x.shape[-2:], mode="bilinear",
                                            align_corners=False)
            return logits, seg
        return logits


class ModelEMA:
    """Keeps an exponential moving average of model weights for evaluation."""

    def __init__(self, model, decay=0.9998, tau=2000):
        self.ema = copy.deepcopy(model).eval()
        self.decay = lambda n: decay * (1 - math.exp(-n / tau))
        self.updates = 0
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay(self.updates)
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305
