# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Model EMA and a small Lion optimizer (kept here because several projects vendor it)."""
import copy

import torch
from torch import nn
from torch.optim import Optimizer


class ModelEMA:
    def __init__(self, model, decay=0.9998, warmup=2000):
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - torch.exp(torch.tensor(-self.updates / self.warmup))).item()
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                v.copy_(msd[k])  # ok: MLS302, MLS303, MLS304, MLS305


class Lion(Optimizer):
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
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                buf = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                update = buf.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                buf.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def zero_init_residual(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and getattr(m, "is_last_in_block", False):
            nn.init.zeros_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
