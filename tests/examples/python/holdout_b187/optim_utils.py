# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Optimizer utilities: EMA of weights, warmup+cosine LR, init, and a small SAM implementation."""
import math

import torch
import torch.nn as nn


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.ema[k].copy_(v)  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * t))


def apply_lr(optimizer, step, base_lr, warmup, total):
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, base_lr, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


class SAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer_cls, rho=0.05, **kwargs):
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base = base_optimizer_cls(self.param_groups, **kwargs)

    @torch.no_grad()
    def step(self, closure):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.norm(torch.stack([gr.norm(2) for gr in grads]), 2) + 1e-12
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                e_w = p.grad * group["rho"] / norm
                p.add_(e_w)  # ok: MLS302, MLS303, MLS304, MLS305
                self.state[p]["e_w"] = e_w
        with torch.enable_grad():
            closure()
        for group in self.param_groups:
            for p in group["params"]:
                if "e_w" in self.state[p]:
                    p.sub_(self.state[p]["e_w"])  # ok: MLS302, MLS303, MLS304, MLS305
        self.base.step()
