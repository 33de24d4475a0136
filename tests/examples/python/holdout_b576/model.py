# ruff: noqa
# Hold-out batch 576 (families 5/6, 3D medical image segmentation with Lightning). Measured once in session 26 (round 153): 3/30 (10%) at medium+.
"""3D U-Net with deep supervision and the Dice + CE loss used for training."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from data import IGNORE_INDEX

DEFAULT_FEATURES = (32, 64, 128, 256, 320, 320)
DEFAULT_STRIDES = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride=(1, 1, 1)):
        super().__init__(
            nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=True),
            nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class Stage(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride=(1, 1, 1)):
        super().__init__(ConvNormAct(cin, cout, stride), ConvNormAct(cout, cout))


class PlainUNet3D(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 14,
        features: Sequence[int] = DEFAULT_FEATURES,
        strides: Sequence[Tuple[int, int, int]] = DEFAULT_STRIDES,
        deep_supervision: bool = True,
    ):
        super().__init__()
        assert len(features) == len(strides)
        self.strides = [tuple(s) for s in strides]
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList()
        cin = in_channels
        for f, s in zip(features, strides):
            self.encoder.append(Stage(cin, f, s))
            cin = f
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i in range(len(features) - 1, 0, -1):
            self.upsample.append(nn.ConvTranspose3d(features[i], features[i - 1], strides[i], strides[i], bias=False))
            self.decoder.append(Stage(2 * features[i - 1], features[i - 1]))
            self.heads.append(nn.Conv3d(features[i - 1], num_classes, kernel_size=1))
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x):
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, dec, head in zip(self.upsample, self.decoder, self.heads):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
            outputs.append(head(x))
        outputs = outputs[::-1]  # highest resolution first
        if self.deep_supervision and self.training:
            return outputs
        return outputs[0]

    def deep_supervision_kernels(self) -> List[Tuple[int, int, int]]:
        """Cumulative downsampling factor of every auxiliary output w.r.t. the input."""
        kernels, acc = [], np.ones(3, dtype=np.int64)
        for s in self.strides[1:-1]:
            acc = acc * np.asarray(s)
            kernels.append(tuple(int(k) for k in acc))
        return kernels


def downsample_seg(seg: torch.Tensor, kernels: Sequence[Tuple[int, int, int]]) -> List[torch.Tensor]:
    """Targets for the auxiliary outputs, full resolution first."""
    targets = [seg]
    for k in kernels:
        targets.append(F.max_pool3d(seg.float(), kernel_size=k, stride=k).long())  # todoruleid: family 6 (missed)
    return targets


class SoftDiceLoss(nn.Module):
    def __init__(self, smooth: float = 1e-5, include_background: bool = False, batch_dice: bool = True,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.smooth = smooth
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        probs = torch.softmax(logits.float(), dim=1)
        valid = (target != self.ignore_index).float()
        tgt = torch.where(target == self.ignore_index, torch.zeros_like(target), target)
        onehot = F.one_hot(tgt[:, 0], num_classes).permute(0, 4, 1, 2, 3).float()
        probs, onehot = probs * valid, onehot * valid
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        axes = (0, 2, 3, 4) if self.batch_dice else (2, 3, 4)
        inter = (probs * onehot).sum(axes)
        denom = probs.sum(axes) + onehot.sum(axes)
        dc = (2.0 * inter + self.smooth) / (denom + self.smooth).clamp_min(1e-8)  # ok: MLS306
        return 1.0 - dc.mean()


class DiceCELoss(nn.Module):
    def __init__(self, weight_ce: float = 1.0, weight_dice: float = 1.0, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index)  # ok: MLS309
        self.dice = SoftDiceLoss(ignore_index=ignore_index)
        self.weight_ce, self.weight_dice = weight_ce, weight_dice

    def forward(self, logits, target):
        ce = self.ce(logits, target[:, 0].long())
        return self.weight_ce * ce + self.weight_dice * self.dice(logits, target)


class DeepSupervisionLoss(nn.Module):
    """Weights 1, 1/2, 1/4, ... (lowest resolution dropped), normalised to sum to one."""

    def __init__(self, loss: nn.Module, num_outputs: int):
        super().__init__()
        w = np.array([1.0 / (2 ** i) for i in range(num_outputs)])
        w[-1] = 0.0
        self.register_buffer("weights", torch.as_tensor(w / w.sum(), dtype=torch.float32), persistent=False)
        self.loss = loss

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        total = outputs[0].new_zeros(())
        for w, out, tgt in zip(self.weights, outputs, targets):
            if w > 0:
                total = total + w * self.loss(out, tgt)
        return total
