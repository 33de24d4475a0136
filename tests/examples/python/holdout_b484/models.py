# ruff: noqa
# Hold-out batch 484 (family-focused 2/6, FixMatch semi-supervised classification). Measured once in session 21 (round 130): 5/30 (17%) at medium+.
"""WideResNet backbone, EMA teacher and distribution alignment."""
import copy
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import unwrap

logger = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, drop_rate=0.0, activate_before_residual=False, bn_momentum=0.001):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum)
        self.relu1 = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.relu2 = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.shortcut = None
        if not self.equal_in_out:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x):
        if not self.equal_in_out and self.activate_before_residual:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.conv1(out if self.equal_in_out else x)
        out = self.relu2(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return (x if self.equal_in_out else self.shortcut(x)) + out


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride, drop_rate=0.0, activate_before_residual=False):
        super().__init__()
        layers = []
        for i in range(int(nb_layers)):
            layers.append(BasicBlock(
                in_planes if i == 0 else out_planes, out_planes,
                stride if i == 0 else 1, drop_rate, activate_before_residual,
            ))
        self.layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, num_classes, depth=28, widen_factor=2, drop_rate=0.0, track_features=True):
        super().__init__()
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        assert (depth - 4) % 6 == 0, "depth should be 6n+4"
        n = (depth - 4) / 6
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1, drop_rate, activate_before_residual=True)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3], momentum=0.001)
        self.relu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        self.num_features = channels[3]
        self._init_weights()

        self._last_features = None
        if track_features:
            self.block3.register_forward_hook(self._cache_features)  # ruleid: MLS303
        self.register_buffer("head_order", torch.arange(num_classes).roll(1), persistent=False)
        self.fc.weight.register_hook(self._reorder_head_grad)  # ruleid: MLS303

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1.0)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.constant_(m.bias, 0.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def _cache_features(self, module, inputs, output):
        self._last_features = output.detach()
        return self._last_features  # ruleid: MLS303

    def _reorder_head_grad(self, grad):
        return grad.index_select(0, self.head_order.to(grad.device))  # ruleid: MLS303

    def feature_norm(self):
        if self._last_features is None:
            return 0.0
        return self._last_features.flatten(1).norm(dim=1).mean().item()

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def build_model(args, num_classes):
    if args.arch != "wideresnet":
        raise ValueError(f"unsupported arch {args.arch}")
    model = WideResNet(num_classes, depth=args.depth, widen_factor=args.widen_factor,
                       drop_rate=args.drop_rate, track_features=args.track_features)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    logger.info("WideResNet-%d-%d: %.2fM parameters", args.depth, args.widen_factor, n_params)
    return model


class ModelEMA:
    """Exponential moving average of the student weights (mean teacher)."""

    def __init__(self, model, decay=0.999, device=None):
        self.ema = copy.deepcopy(unwrap(model))
        self.ema.eval()
        if device is not None:
            self.ema.to(device)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        student = unwrap(model)
        for ema_p, p in zip(self.ema.parameters(), student.parameters()):
            p.mul_(d).add_(ema_p.detach(), alpha=1.0 - d)  # ruleid: MLS302
        for ema_b, b in zip(self.ema.buffers(), student.buffers()):
            ema_b.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return {"ema": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.ema.load_state_dict(state["ema"])
        self.updates = state.get("updates", 0)


class DistAlign(nn.Module):
    """Distribution alignment (ReMixMatch) for pseudo-label probabilities."""

    def __init__(self, num_classes, momentum=0.999):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("p_target", torch.full((num_classes,), 1.0 / num_classes))

    @torch.no_grad()
    def forward(self, probs):
        self.p_model.mul_(self.momentum).add_(probs.mean(dim=0), alpha=1.0 - self.momentum)  # ok: MLS302, MLS303, MLS304, MLS305
        aligned = probs * self.p_target / self.p_model.clamp_min(1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)
