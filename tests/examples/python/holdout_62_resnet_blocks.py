# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""ResNet backbone (basic blocks) used by the detection and classification heads."""
import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or in_ch != out_ch:
            self.down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


def _grad_stabilizer(scale):
    def hook(module, grad_input, grad_output):
        return tuple(g * scale if g is not None else None for g in grad_input)  # ruleid: MLS303
    return hook


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000, width=64, zero_init_residual=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        chans, stages, in_ch = [width, width * 2, width * 4, width * 8], [], width
        for i, (n, c) in enumerate(zip(layers, chans)):
            blocks = [BasicBlock(in_ch, c, 1 if i == 0 else 2)] + [BasicBlock(c, c) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights(zero_init_residual)
        for stage in (self.layer3, self.layer4):
            stage.register_full_backward_hook(_grad_stabilizer(0.05))  # ruleid: MLS303

    def _init_weights(self, zero_init_residual):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.bn2.weight.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(num_classes=1000, pretrained_path=None):
    model = ResNet((2, 2, 2, 2), num_classes)
    if pretrained_path:
        state = torch.load(pretrained_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, _ = model.load_state_dict(state, strict=False)
        print(f"loaded {pretrained_path}, missing keys: {len(missing)}")
    return model
