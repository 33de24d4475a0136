# ruff: noqa
# Hold-out batch 553 (textbook, DeepLabV3+ urban scene segmentation). Measured once in session 25 (round 148): 20/33 (61%) at medium+.
"""DeepLabV3+ with a dilated ResNet backbone."""

import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet

logger = logging.getLogger("seg.model")

_BACKBONES = {
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
}


def get_norm_layer(name):
    """Return a normalisation layer class by name (BatchNorm2d, SyncBatchNorm, ...)."""
    return eval("nn." + name)  # ruleid: MLS401


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch, out_ch, kernel_size=3, dilation=1, norm_layer=nn.BatchNorm2d):
        padding = 0 if kernel_size == 1 else dilation
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, bias=False),
            norm_layer(out_ch),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Module):
    def __init__(self, in_ch, out_ch, norm_layer):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = norm_layer(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        size = x.shape[-2:]
        y = self.relu(self.bn(self.conv(self.pool(x))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_ch, out_ch=256, rates=(6, 12, 18), norm_layer=nn.BatchNorm2d):
        super().__init__()
        branches = [ConvBNReLU(in_ch, out_ch, 1, norm_layer=norm_layer)]
        for r in rates:
            branches.append(ConvBNReLU(in_ch, out_ch, 3, dilation=r, norm_layer=norm_layer))
        branches.append(ASPPPooling(in_ch, out_ch, norm_layer))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(out_ch * len(branches), out_ch, 1, norm_layer=norm_layer),
            nn.Dropout(0.5),
        )

    def forward(self, x):
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabV3PlusHead(nn.Module):
    def __init__(self, in_ch, low_ch, num_classes, output_stride=16, norm_layer=nn.BatchNorm2d):
        super().__init__()
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(in_ch, 256, rates, norm_layer)
        self.low_proj = ConvBNReLU(low_ch, 48, 1, norm_layer=norm_layer)
        self.fuse = nn.Sequential(
            ConvBNReLU(256 + 48, 256, 3, norm_layer=norm_layer),
            ConvBNReLU(256, 256, 3, norm_layer=norm_layer),
            nn.Dropout(0.1),
        )
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, high, low):
        x = self.aspp(high)
        low = self.low_proj(low)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([x, low], dim=1))
        return self.classifier(x)


class FCNAuxHead(nn.Module):
    def __init__(self, in_ch, num_classes, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.block = nn.Sequential(
            ConvBNReLU(in_ch, 256, 3, norm_layer=norm_layer),
            nn.Dropout(0.1),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, x):
        return self.block(x)


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes=19, backbone="resnet101", output_stride=16,
                 norm="BatchNorm2d", aux_head=True):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        if output_stride == 16:
            dilation = [False, False, True]
        elif output_stride == 8:
            dilation = [False, True, True]
        else:
            raise ValueError(f"unsupported output stride {output_stride}")
        net = _BACKBONES[backbone](weights=None, replace_stride_with_dilation=dilation,
                                   norm_layer=norm_layer)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4
        self.head = DeepLabV3PlusHead(2048, 256, num_classes, output_stride, norm_layer)
        self.aux = FCNAuxHead(1024, num_classes, norm_layer) if aux_head else None
        self._init_head()

    def _init_head(self):
        for m in list(self.head.modules()) + (list(self.aux.modules()) if self.aux else []):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def backbone_parameters(self):
        for mod in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
            yield from mod.parameters()

    def head_parameters(self):
        yield from self.head.parameters()
        if self.aux is not None:
            yield from self.aux.parameters()

    def forward(self, x):
        size = x.shape[-2:]
        x = self.stem(x)
        low = self.layer1(x)
        x = self.layer2(low)
        c3 = self.layer3(x)
        c4 = self.layer4(c3)
        out = self.head(c4, low)
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if self.training and self.aux is not None:
            aux = F.interpolate(self.aux(c3), size=size, mode="bilinear", align_corners=False)
            return out, aux
        return out


def load_backbone_weights(model, path):
    """Load ImageNet weights (torchvision layout) into the backbone."""
    if not path:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if "state_dict" in state:
        state = state["state_dict"]
    remap = {}
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        if k.startswith(("conv1.", "bn1.")):
            k = "stem." + k.replace("conv1.", "0.").replace("bn1.", "1.")
        if k.endswith("running_var"):
            v = v.sqrt()  # todoruleid: family 2 (missed)
        remap[k] = v
    missing, unexpected = model.load_state_dict(remap, strict=False)
    missing = [k for k in missing if not k.startswith(("head.", "aux."))]
    logger.info("backbone loaded from %s (missing=%d, unexpected=%d)",
                path, len(missing), len(unexpected))


def build_model(args):
    model = DeepLabV3Plus(num_classes=args.num_classes, backbone=args.backbone,
                          output_stride=args.output_stride, norm=args.norm,
                          aux_head=args.aux_weight > 0)
    if args.hub_backbone:
        hub_net = torch.hub.load(args.hub_backbone, args.backbone, pretrained=True, trust_repo=True)  # ruleid: MLS108
        model.load_state_dict({"stem.0.weight": hub_net.conv1.weight}, strict=False)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            getattr(model, name).load_state_dict(getattr(hub_net, name).state_dict(), strict=False)
    else:
        load_backbone_weights(model, args.pretrained)
    return model
