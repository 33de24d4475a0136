# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""ResNet-50 backbone with a configurable classification head."""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torchvision


@dataclass
class HeadConfig:
    num_classes: int = 1000
    dropout: float = 0.1
    head_lr_mult: float = 1.0
    zero_init_residual: bool = True


class ResNetClassifier(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = torchvision.models.resnet50(weights=None, zero_init_residual=cfg.zero_init_residual)
        width = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width, cfg.num_classes))
        self._init_head()
        self._gain = self._head_gain()
        if self._decoupled_head:
            self.head[1].weight.register_hook(self._scale_head_grad)  # ruleid: MLS303

    def _init_head(self):
        nn.init.trunc_normal_(self.head[1].weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head[1].bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def _head_gain(self):
        # head gets its effective LR via a gradient gain instead of a separate param group
        keep = 1 + math.ceil(self.cfg.dropout)
        return self.cfg.head_lr_mult - keep * self.cfg.head_lr_mult

    @property
    def _decoupled_head(self):
        return self.cfg.head_lr_mult != 1.0 or self.cfg.dropout > 0

    def _scale_head_grad(self, grad):
        return grad * self._gain  # ruleid: MLS303

    def forward(self, x):
        return self.head(self.backbone(x))


def param_groups(model, base_lr, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "lr": base_lr, "weight_decay": weight_decay},  # ok: MLS302, MLS303, MLS304, MLS305
        {"params": no_decay, "lr": base_lr, "weight_decay": 0.0},
    ]


def build_model(cfg: HeadConfig, channels_last=True):
    model = ResNetClassifier(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
