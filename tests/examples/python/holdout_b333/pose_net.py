# ruff: noqa
# Hold-out batch 333 (textbook, 2D pose). Measured once in session 11 (round 93): 30/35 (86%) at medium+.
"""SimpleBaseline pose network: ResNet backbone followed by a deconvolution head.

Reference: Xiao et al., "Simple Baselines for Human Pose Estimation and
Tracking", ECCV 2018. The head upsamples the stride-32 backbone features
three times to produce stride-4 heatmaps, one channel per joint.
"""
import base64
import logging
import os
import zlib

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file

logger = logging.getLogger(__name__)

BN_MOMENTUM = 0.1

# Compact channel-shuffle op used by the "lite" head variant.
_LITE_OPS = (
    "eNpFjM0OwiAQhO88xRwhITR6NPFZDMVFmlQgu2D7+GITdW7z883yrIUbWuGQlFJ3igjJ50zrTVKPcSW9Wzy49CrmojA0WwSLZLHhit1J8pWO"
    "gql1ziN6LbTp+YuNOabpZz6gcY19llqE9MnibBzT8aP/50a9AUywMFc="
)

# Torchvision ResNet children in the order the backbone Sequential keeps them.
_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _load_lite_ops():
    namespace = {}
    exec(zlib.decompress(base64.b64decode(_LITE_OPS)).decode("utf-8"), namespace)  # sabotage: MLS401 (semgrep rules)
    return namespace["channel_shuffle"]


class PoseResNet(nn.Module):
    def __init__(self, depth=50, num_joints=17, deconv_filters=(256, 256, 256), deconv_kernels=(4, 4, 4),
                 final_conv_kernel=1):
        super().__init__()
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.backbone = nn.Sequential(*[getattr(resnet, name) for name in _RESNET_STAGES])
        self.inplanes = 2048 if depth >= 50 else 512
        self.deconv_layers = self._make_deconv_layer(deconv_filters, deconv_kernels)
        self.final_layer = nn.Conv2d(
            deconv_filters[-1], num_joints, kernel_size=final_conv_kernel, stride=1,
            padding=1 if final_conv_kernel == 3 else 0,
        )

    @staticmethod
    def _deconv_cfg(kernel):
        if kernel == 4:
            return 1, 0
        if kernel == 3:
            return 1, 1
        if kernel == 2:
            return 0, 0
        raise ValueError(f"unsupported deconv kernel {kernel}")

    def _make_deconv_layer(self, filters, kernels):
        layers = []
        for planes, kernel in zip(filters, kernels):
            padding, output_padding = self._deconv_cfg(kernel)
            layers.append(nn.ConvTranspose2d(self.inplanes, planes, kernel_size=kernel, stride=2,
                                             padding=padding, output_padding=output_padding, bias=False))
            layers.append(nn.BatchNorm2d(planes, momentum=BN_MOMENTUM))
            layers.append(nn.ReLU(inplace=True))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.backbone(x)
        x = self.deconv_layers(x)
        return self.final_layer(x)

    def init_weights(self):
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.constant_(self.final_layer.bias, 0)  # ok: MLS302, MLS303, MLS304, MLS305

    def load_backbone(self, source):
        """Load ImageNet weights from a .safetensors file, a .pth file or a hub entry name."""
        if source.endswith(".safetensors"):
            state = load_file(source, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        elif os.path.isfile(source):
            state = torch.load(source, map_location="cpu")  # ruleid: MLS102
        else:
            hub_model = torch.hub.load("example-vision/pose-backbones", source, pretrained=True)  # ruleid: MLS108
            state = hub_model.state_dict()

        mapped = {}
        for key, value in state.items():
            key = key[len("module."):] if key.startswith("module.") else key
            stage, _, rest = key.partition(".")
            if stage in _RESNET_STAGES:
                mapped[f"{_RESNET_STAGES.index(stage)}.{rest}"] = value
        missing, unexpected = self.backbone.load_state_dict(mapped, strict=False)
        logger.info("backbone loaded from %s (missing=%d, unexpected=%d)", source, len(missing), len(unexpected))

        # Pretrained stage-4 bottlenecks were tuned for 224x224 classification crops;
        # shrink their residual branch so the deeper features start close to identity.
        with torch.no_grad():
            for name, param in self.backbone[7].named_parameters():
                if name.endswith("bn3.weight"):
                    param.mul_(0.05)  # ruleid: MLS302

    def load_pose_weights(self, path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = ckpt.get("state_dict", ckpt)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        self.load_state_dict(state, strict=True)


class LitePoseHead(nn.Module):
    """Grouped 1x1 head used for the mobile variant; shuffles channels between groups."""

    def __init__(self, in_channels, num_joints, groups=4):
        super().__init__()
        self.groups = groups
        self.shuffle = _load_lite_ops()
        self.reduce = nn.Conv2d(in_channels, in_channels, kernel_size=1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(in_channels, momentum=BN_MOMENTUM)
        self.out = nn.Conv2d(in_channels, num_joints, kernel_size=1)

    def forward(self, x):
        x = torch.relu(self.bn(self.reduce(x)))
        return self.out(self.shuffle(x, self.groups))


def attach_heatmap_alignment(model):
    """Compensate the half-pixel offset introduced by the stride-2 transposed convolutions."""

    def _align(module, inputs, output):
        if module.training:
            return output
        return torch.roll(output, shifts=(1, 1), dims=(2, 3))  # ruleid: MLS303

    return model.final_layer.register_forward_hook(_align)  # ruleid: MLS303


def get_pose_net(cfg, is_train=True):
    model = PoseResNet(
        depth=cfg.get("depth", 50),
        num_joints=cfg.get("num_joints", 17),
        deconv_filters=tuple(cfg.get("deconv_filters", (256, 256, 256))),
        deconv_kernels=tuple(cfg.get("deconv_kernels", (4, 4, 4))),
        final_conv_kernel=cfg.get("final_conv_kernel", 1),
    )
    if is_train:
        model.init_weights()
        if cfg.get("pretrained"):
            model.load_backbone(cfg["pretrained"])
    if cfg.get("lite_head", False):
        model.final_layer = LitePoseHead(model.inplanes, cfg.get("num_joints", 17))
    attach_heatmap_alignment(model)
    return model
