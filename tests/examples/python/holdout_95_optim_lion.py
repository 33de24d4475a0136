# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Lion optimizer, parameter grouping and transformer weight initialisation."""
import math

import torch
import torch.nn as nn
from torch.optim import Optimizer


class Lion(Optimizer):
    """Sign-momentum optimizer (Chen et al., 2023) with decoupled weight decay."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, (b1, b2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["exp_avg"]
                p.mul_(1 - lr * wd)  # ok: MLS302, MLS303, MLS304, MLS305
                update = m.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-lr)  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def init_weights(module, std=0.02, n_layers=12):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        if getattr(module, "is_residual_proj", False):
            module.weight.data.mul_(1 / math.sqrt(2 * n_layers))  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)


def param_groups(model, weight_decay=0.1):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model, lr=3e-4, weight_decay=0.1):
    model.apply(init_weights)
    return Lion(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.99))
