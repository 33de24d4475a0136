# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Model EMA, weight init and a plain SGD implementation used in the diffusion trainer."""
import copy
import math

import torch
import torch.nn as nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: int = 2000):
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup))
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.data.mul_(d).add_(p.data, alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for sb, b in zip(self.shadow.buffers(), model.buffers()):
            sb.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305


def init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if m.bias is not None:
            m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(m, nn.GroupNorm):
        m.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        m.bias.data.zero_()


class PlainSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(d_p)  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def zero_init_last_layers(model: nn.Module) -> None:
    for name, mod in model.named_modules():
        if name.endswith("out_proj") and isinstance(mod, nn.Linear):
            nn.init.zeros_(mod.weight)  # ok: MLS302, MLS303, MLS304, MLS305
