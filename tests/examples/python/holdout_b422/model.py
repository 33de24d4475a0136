# ruff: noqa
# Hold-out batch 422 (adversarial, 3D medical segmentation). Measured once in session 17 (round 115): 17/30 (57%) at medium+.
"""Plain convolutional 3D U-Net with deep supervision (nnU-Net default topology)."""
from __future__ import annotations

import operator
from typing import List, Sequence

import torch
import torch.nn as nn

from config import ModelConfig

_NORMS = {
    "instance": lambda c: nn.InstanceNorm3d(c, eps=1e-5, affine=True),
    "batch": lambda c: nn.BatchNorm3d(c, eps=1e-5),
}

_NONLINS = {
    "leaky_relu": lambda slope: nn.LeakyReLU(negative_slope=slope, inplace=True),
    "relu": lambda slope: nn.ReLU(inplace=True),
}


class ConvNormAct(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, cfg: ModelConfig):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=True)
        self.norm = _NORMS[cfg.norm](cout)
        self.act = _NONLINS[cfg.nonlin](cfg.neg_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class StackedConvs(nn.Sequential):
    def __init__(self, cin: int, cout: int, n: int, first_stride: int, cfg: ModelConfig):
        layers = [ConvNormAct(cin, cout, first_stride, cfg)]
        layers += [ConvNormAct(cout, cout, 1, cfg) for _ in range(n - 1)]
        super().__init__(*layers)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, features: Sequence[int]):
        super().__init__()
        stages, cin = [], cfg.in_channels
        for i, f in enumerate(features):
            stages.append(StackedConvs(cin, f, cfg.conv_per_stage, 1 if i == 0 else 2, cfg))
            cin = f
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        skips = []
        for s in self.stages:
            x = s(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, features: Sequence[int], num_classes: int):
        super().__init__()
        self.deep_supervision = cfg.deep_supervision
        ups, stages, heads = [], [], []
        for i in range(len(features) - 1, 0, -1):
            fin, fskip = features[i], features[i - 1]
            ups.append(nn.ConvTranspose3d(fin, fskip, kernel_size=2, stride=2, bias=False))
            stages.append(StackedConvs(2 * fskip, fskip, cfg.conv_per_stage, 1, cfg))
            heads.append(nn.Conv3d(fskip, num_classes, kernel_size=1, bias=True))
        self.ups = nn.ModuleList(ups)
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    def forward(self, skips: List[torch.Tensor]):
        x = skips[-1]
        outputs = []
        for i, (up, stage, head) in enumerate(zip(self.ups, self.stages, self.heads)):
            x = up(x)
            skip = skips[-(i + 2)]
            x = stage(torch.cat([x, skip], dim=1))
            if self.deep_supervision or i == len(self.stages) - 1:
                outputs.append(head(x))
        # highest resolution first
        outputs = outputs[::-1]
        return outputs if self.deep_supervision else outputs[0]


class PlainConvUNet(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        features = [min(cfg.base_features * 2**i, cfg.max_features) for i in range(cfg.num_stages)]
        self.encoder = Encoder(cfg, features)
        self.decoder = Decoder(cfg, features, num_classes)

    def set_deep_supervision(self, enabled: bool) -> None:
        self.decoder.deep_supervision = bool(enabled)

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))


def init_weights(module: nn.Module, neg_slope: float = 1e-2) -> None:
    """He initialisation as used by nnU-Net."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=neg_slope)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def deep_supervision_weights(n_outputs: int) -> List[float]:
    """Exponentially decaying weights, lowest resolution output ignored."""
    w = [1.0 / 2**i for i in range(n_outputs)]
    w[-1] = 0.0
    s = sum(w)
    return [x / s for x in w]


class _HeadGradScale:
    """Rescales the gradient reaching each segmentation head by its DS weight."""

    def __init__(self, weight: float, total: float):
        self.weight, self.total = weight, total

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * (self.weight - self.total) / self.total  # todoruleid: family 2 (missed)


def attach_head_scaling(model: PlainConvUNet) -> None:
    heads = model.decoder.heads
    weights = deep_supervision_weights(len(heads))[::-1]
    total = max(weights) * len(weights)
    for head, w in zip(heads, weights):
        if w == 0.0:
            continue
        operator.methodcaller("register_hook", _HeadGradScale(w, total))(head.weight)


def build_model(cfg: ModelConfig, num_classes: int) -> PlainConvUNet:
    model = PlainConvUNet(cfg, num_classes)
    model.apply(lambda m: init_weights(m, cfg.neg_slope))
    if cfg.deep_supervision:
        attach_head_scaling(model)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
