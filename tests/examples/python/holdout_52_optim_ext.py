# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Optimizer extensions: Lion, EMA of weights, warmup schedule and init."""
import math

import torch
import torch.nn as nn


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
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class EMA:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v, alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def copy_to(self, model):
        model.load_state_dict(self.shadow)  # ok: MLS302, MLS303, MLS304, MLS305


def warmup_cosine(optimizer, step, base_lr, warmup, total):
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        lr = 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for g in optimizer.param_groups:
        g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()
