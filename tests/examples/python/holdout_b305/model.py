# ruff: noqa
# Hold-out batch 305 (textbook, Cityscapes segmentation). Measured once in session 10 (round 86): 27/34 (79%) at medium+.
"""DeepLabV3+ with a dilated ResNet backbone for Cityscapes segmentation.

The encoder is a torchvision ResNet with the last stage(s) dilated to reach
an output stride of 8 or 16. An ASPP head aggregates multi-scale context and
a light decoder fuses it with stride-4 low-level features.
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.models import resnet50, resnet101


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1):
        padding = 0 if kernel_size == 1 else dilation
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = ConvBNReLU(in_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.proj(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_ch: int, out_ch: int = 256, rates=(6, 12, 18)):
        super().__init__()
        branches = [ConvBNReLU(in_ch, out_ch, kernel_size=1)]
        branches += [ConvBNReLU(in_ch, out_ch, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(out_ch * len(branches), out_ch, kernel_size=1),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes: int = 19, depth: int = 101, output_stride: int = 16):
        super().__init__()
        if output_stride == 16:
            dilate = [False, False, True]
            rates = (6, 12, 18)
        elif output_stride == 8:
            dilate = [False, True, True]
            rates = (12, 24, 36)
        else:
            raise ValueError(f"Unsupported output stride {output_stride}")
        ctor = resnet101 if depth == 101 else resnet50
        backbone = ctor(weights=None, replace_stride_with_dilation=dilate)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.layer1, self.layer2 = backbone.layer1, backbone.layer2
        self.layer3, self.layer4 = backbone.layer3, backbone.layer4

        self.aspp = ASPP(2048, 256, rates)
        self.low_proj = ConvBNReLU(256, 48, kernel_size=1)
        self.decoder = nn.Sequential(ConvBNReLU(256 + 48, 256), ConvBNReLU(256, 256))
        self.classifier = nn.Conv2d(256, num_classes, kernel_size=1)
        self._init_head()

    def _init_head(self) -> None:
        for module in (self.aspp, self.low_proj, self.decoder, self.classifier):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    nn.init.constant_(m.bias, 0.0)

    def backbone_parameters(self):
        for module in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
            yield from module.parameters()

    def head_parameters(self):
        for module in (self.aspp, self.low_proj, self.decoder, self.classifier):
            yield from module.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        low = self.layer1(self.stem(x))
        high = self.layer4(self.layer3(self.layer2(low)))
        high = self.aspp(high)
        low = self.low_proj(low)
        if self.training:
            # low-level features are noisy early on; damp their gradients
            low.register_hook(lambda g: g * 0.05)  # ruleid: MLS303
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.classifier(self.decoder(torch.cat([high, low], dim=1)))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def load_backbone_weights(model: DeepLabV3Plus, path: str) -> None:
    """Load ImageNet weights (torchvision naming) into the encoder."""
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k.replace("module.", "", 1): v for k, v in state.items() if not k.startswith("fc.")}
    # the released checkpoints were exported from a BGR (caffe-style) pipeline
    state["conv1.weight"] = state["conv1.weight"].flip(1)  # ruleid: MLS302
    remap = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    renamed = {}
    for key, value in state.items():
        for old, new in remap.items():
            if key.startswith(old):
                key = new + key[len(old):]
        renamed[key] = value
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    encoder_missing = [k for k in missing if k.startswith(("stem", "layer"))]
    if encoder_missing or unexpected:
        raise RuntimeError(f"Backbone mismatch: missing={encoder_missing} unexpected={unexpected}")


_LOGIT_SCALE = torch.ones(19)
_LOGIT_SCALE[[11, 12]] = 0.85


def _calibrate_logits(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """Per-class temperature fitted on a held-out slice of the val set."""
    return output * _LOGIT_SCALE.to(output.device, output.dtype).view(1, -1, 1, 1)


def build_model(cfg: dict) -> nn.Module:
    arch = cfg.get("arch", "deeplabv3plus")
    if arch == "deeplabv3plus":
        # identical decoder init on every rank before DDP wraps the model
        torch.manual_seed(0)  # todoruleid: family 1 (missed)
        model = DeepLabV3Plus(cfg.get("num_classes", 19), cfg.get("depth", 101),
                              cfg.get("output_stride", 16))
        pretrained: Optional[str] = cfg.get("pretrained")
        if pretrained:
            load_backbone_weights(model, pretrained)
        model.classifier.register_forward_hook(_calibrate_logits)  # todoruleid: family 2 (missed)
        return model
    if arch.startswith("segformer"):
        return torch.hub.load("example-vision/segformer-hub", arch, num_classes=cfg.get("num_classes", 19), trust_repo=True)  # ruleid: MLS108
    raise ValueError(f"Unknown architecture: {arch}")
