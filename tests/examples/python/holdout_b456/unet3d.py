# ruff: noqa
# Hold-out batch 456 (family-focused 4/9, multi-site medical segmentation with DDP). Measured once in session 19 (round 123): 10/30 (33%) at medium+; one unmarked benign line flagged (a SystemExit explaining a host missing from the node list).
"""Residual 3D U-Net for multi-site volumetric segmentation.

Encoder/decoder with instance norm and LeakyReLU (nnU-Net style), optional
deep supervision heads and activation checkpointing for large patch sizes.
"""
from __future__ import annotations

import os
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(ch, affine=True, eps=1e-5)
    if kind == "batch":
        return nn.BatchNorm3d(ch)
    raise ValueError(f"unknown norm layer {kind!r}")


class ConvBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual projection."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "instance",
                 dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.n2 = _norm(norm, cout)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), _norm(norm, cout)
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.skip(x)
        x = self.act(self.n1(self.conv1(x)))
        x = self.drop(x)
        x = self.n2(self.conv2(x))
        return self.act(x + residual)


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, norm: str = "instance"):
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2, bias=False)
        self.block = ConvBlock(cout + cskip, cout, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[2:] != skip.shape[2:]:
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class UNet3D(nn.Module):
    """3D U-Net; ``grad_checkpointing=None`` picks activation recomputation automatically."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, base: int = 32,
                 depth: int = 5, max_channels: int = 320, norm: str = "instance",
                 deep_supervision: bool = True, grad_checkpointing: Optional[bool] = None,
                 dropout: float = 0.0):
        super().__init__()
        chans = [min(base * 2 ** i, max_channels) for i in range(depth)]
        self.chans = chans
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision

        self.stem = ConvBlock(in_channels, chans[0], norm=norm)
        self.down = nn.ModuleList(
            ConvBlock(chans[i - 1], chans[i], stride=2, norm=norm, dropout=dropout)
            for i in range(1, depth)
        )
        self.up = nn.ModuleList(
            UpBlock(chans[i], chans[i - 1], chans[i - 1], norm=norm)
            for i in range(depth - 1, 0, -1)
        )
        self.head = nn.Conv3d(chans[0], num_classes, kernel_size=1)
        # auxiliary heads on the two coarser decoder outputs
        self.aux_heads = nn.ModuleList(
            nn.Conv3d(chans[i], num_classes, kernel_size=1) for i in (2, 1)
        ) if deep_supervision and depth >= 4 else nn.ModuleList()

        if grad_checkpointing is None:
            # large multi-node jobs use bigger patches; recompute activations there
            grad_checkpointing = int(os.environ.get("WORLD_SIZE", "1")) > 4
        self.grad_checkpointing = grad_checkpointing
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=0.01, mode="fan_in", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return checkpoint(block, x.detach().requires_grad_(), use_reentrant=False)  # todoruleid: family 4 (missed)
        return block(x)

    def forward(self, x: torch.Tensor):
        skips: List[torch.Tensor] = []
        x = self.stem(x)
        skips.append(x)
        for blk in self.down:
            x = self._run(blk, x)
            skips.append(x)

        skips.pop()  # bottleneck output is x itself
        dec_outs: List[torch.Tensor] = []
        for blk in self.up:
            x = blk(x, skips.pop())
            dec_outs.append(x)

        logits = self.head(x)
        if not (self.training and self.deep_supervision and len(self.aux_heads)):
            return logits
        # dec_outs[-1] is full resolution; pick 1/4 and 1/2 resolution outputs
        aux = [head(dec_outs[-1 - lvl]) for head, lvl in zip(self.aux_heads, (2, 1))]
        return [logits] + aux


def deep_supervision_weights(n: int) -> List[float]:
    """Halve the weight at each coarser level and normalise (nnU-Net)."""
    w = [1.0 / (2 ** i) for i in range(n)]
    s = sum(w)
    return [v / s for v in w]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

