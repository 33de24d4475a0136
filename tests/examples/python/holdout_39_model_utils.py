# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Model-side utilities: weight init, EMA of weights, and a Lion optimizer implementation."""
import copy
import math

import torch
import torch.nn as nn


def init_weights(module, depth=12):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()
    if getattr(module, "is_residual_out", False):
        module.weight.data.mul_(1.0 / math.sqrt(2 * depth))  # ok: MLS302, MLS303, MLS304, MLS305


class ModelEMA:
    def __init__(self, model, decay=0.9999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss
