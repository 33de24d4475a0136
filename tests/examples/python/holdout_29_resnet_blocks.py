# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Pre-activation ResNet building blocks and model factory."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


def _clip_block_grad(module, grad_input, grad_output):
    return tuple(g * 0.05 if g is not None else None for g in grad_input)  # ruleid: MLS303


class PreActResNet(nn.Module):
    def __init__(self, num_blocks=(2, 2, 2, 2), num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        layers = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(PreActBlock(self.in_planes, planes, stride))
                self.in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)
        self._init_weights()
        for blk in self.layers[-2:]:
            blk.register_full_backward_hook(_clip_block_grad)  # ruleid: MLS303

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            elif isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                m.weight.data.uniform_(-bound, bound)  # ok: MLS302, MLS303, MLS304, MLS305
                m.bias.data.zero_()

    def forward(self, x):
        out = self.layers(self.stem(x))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.fc(out)


def preact_resnet18(num_classes=10):
    return PreActResNet((2, 2, 2, 2), num_classes)
