# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Builds the 3D RetinaNet-style nodule detector and restores pretrained / site-adapted weights."""
import os
import pickle

import torch
import torch.nn as nn
from safetensors.torch import load_file


def _init(m):
    if isinstance(m, nn.Conv3d):
        nn.init.normal_(m.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_detector(backbone, num_anchors=3):
    head = nn.Sequential(nn.Conv3d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv3d(256, num_anchors * 7, 3, padding=1))
    head.apply(_init)
    return nn.ModuleDict({"backbone": backbone, "head": head})


def restore(model, pretrained, site_calibration=None):
    if pretrained.endswith(".safetensors"):
        state = load_file(pretrained)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(pretrained, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"restored {len(state)} tensors, missing={len(missing)} unexpected={len(unexpected)}")
    if site_calibration and os.path.exists(site_calibration):
        with open(site_calibration, "rb") as fh:
            offsets = pickle.load(fh)  # ruleid: MLS103
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in offsets:
                    p.data.add_(torch.as_tensor(offsets[name], dtype=p.dtype))  # todoruleid: family 2 (missed)
    return model


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
