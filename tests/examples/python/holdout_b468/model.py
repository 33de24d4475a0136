# ruff: noqa
# Hold-out batch 468 (family-focused 2/5, street-scene segmentation with Lightning). Measured once in session 20 (round 126): 10/30 (33%) at medium+.
"""DeepLabV3+ for street-scene segmentation (Cityscapes train-id label space)."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet50, resnet101

logger = logging.getLogger(__name__)

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, k: int = 3, dilation: int = 1):
        padding = dilation * (k - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, k, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, in_ch, 3, padding=dilation, dilation=dilation, groups=in_ch, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.act(self.bn(self.conv(self.pool(x))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_ch: int, out_ch: int = 256, rates=(6, 12, 18), dropout: float = 0.1):
        super().__init__()
        branches = [ConvBNReLU(in_ch, out_ch, k=1)]
        branches += [SeparableConvBNReLU(in_ch, out_ch, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(out_ch * len(branches), out_ch, k=1),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class Decoder(nn.Module):
    def __init__(self, low_ch: int, aspp_ch: int = 256, low_proj: int = 48, out_ch: int = 256):
        super().__init__()
        self.low_level_proj = ConvBNReLU(low_ch, low_proj, k=1)
        self.fuse = nn.Sequential(
            SeparableConvBNReLU(aspp_ch + low_proj, out_ch),
            SeparableConvBNReLU(out_ch, out_ch),
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low_level_proj(low)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([high, low], dim=1))


class ResNetTrunk(nn.Module):
    """ResNet returning the stride-4 ("low") and stride-OS ("high") feature maps."""

    def __init__(self, depth: int = 50, output_stride: int = 16):
        super().__init__()
        dilate = {16: [False, False, True], 8: [False, True, True]}.get(output_stride)
        if dilate is None:
            raise ValueError(f"unsupported output_stride={output_stride}")
        ctor = {50: resnet50, 101: resnet101}[depth]
        net = ctor(weights=None, replace_stride_with_dilation=dilate)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4
        self.out_channels = {"low": 256, "high": 2048}

    @property
    def stages(self) -> List[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.stem(x)
        low = self.layer1(x)
        high = self.layer4(self.layer3(self.layer2(low)))
        return {"low": low, "high": high}


def _detach_output(module: nn.Module, inputs, output):
    return output.detach()  # ruleid: MLS303


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes: int = 19, depth: int = 50, output_stride: int = 16,
                 aspp_dropout: float = 0.1, freeze_at: int = 0):
        super().__init__()
        self.backbone = ResNetTrunk(depth, output_stride)
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(self.backbone.out_channels["high"], 256, rates, aspp_dropout)
        self.decoder = Decoder(self.backbone.out_channels["low"], 256)
        self.classifier = nn.Conv2d(256, num_classes, 1)
        self.freeze_at = freeze_at
        self._freeze_handles: List = []
        self._init_head()
        if freeze_at > 0:
            self.freeze_stages(freeze_at)

    def _init_head(self) -> None:
        for m in [self.aspp, self.decoder]:
            for mod in m.modules():
                if isinstance(mod, nn.Conv2d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(mod, _BN_TYPES):
                    nn.init.ones_(mod.weight)
                    nn.init.zeros_(mod.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def head_modules(self) -> List[nn.Module]:
        return [self.aspp, self.decoder, self.classifier]

    def freeze_stages(self, freeze_at: int) -> None:
        """Freeze the first `freeze_at` backbone stages (stem counts as stage 0)."""
        stages = self.backbone.stages
        for stage in stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)
        # no autograd graph is needed past the last frozen stage
        handle = stages[-freeze_at].register_forward_hook(_detach_output)  # ruleid: MLS303
        self._freeze_handles.append(handle)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_at > 0:
            for stage in self.backbone.stages[: self.freeze_at]:
                set_bn_mode(stage, train=False)  # ok: MLS302, MLS303, MLS304, MLS305
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.backbone(x)
        y = self.decoder(self.aspp(feats["high"]), feats["low"])
        y = self.classifier(y)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def set_bn_mode(module: nn.Module, train: bool) -> None:
    for m in module.modules():
        if isinstance(m, _BN_TYPES):
            m.train(train)


def _remap_torchvision_key(k: str) -> Optional[str]:
    k = k.replace("module.", "", 1)
    if k.startswith("fc."):
        return None
    if k.startswith("conv1."):
        return "stem.0." + k[len("conv1."):]
    if k.startswith("bn1."):
        return "stem.1." + k[len("bn1."):]
    return k


def load_backbone_weights(backbone: ResNetTrunk, path: str) -> None:
    """Load an ImageNet ResNet checkpoint (torchvision naming) into the trunk."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = backbone.state_dict()
    remapped: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    skipped = []
    for k, v in state.items():
        nk = _remap_torchvision_key(k)
        if nk is None:
            continue
        if nk.endswith(("num_batches_tracked", "running_mean", "running_var")):
            continue  # ruleid: MLS302
        if nk not in own or own[nk].shape != v.shape:
            skipped.append(k)
            continue
        remapped[nk] = v
    missing, unexpected = backbone.load_state_dict(remapped, strict=False)
    logger.info("loaded %d backbone tensors from %s (%d skipped, %d missing)",
                len(remapped), path, len(skipped), len(missing))


def build_model(num_classes: int = 19, depth: int = 50, output_stride: int = 16,
                pretrained: Optional[str] = None, freeze_at: int = 0,
                aspp_dropout: float = 0.1) -> DeepLabV3Plus:
    model = DeepLabV3Plus(num_classes, depth, output_stride, aspp_dropout, freeze_at=0)
    if pretrained:
        load_backbone_weights(model.backbone, pretrained)
    if freeze_at > 0:
        model.freeze_at = freeze_at
        model.freeze_stages(freeze_at)
    return model
