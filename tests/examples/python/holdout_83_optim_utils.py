# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Optimiser pieces for diffusion / flow-matching policy training.

A small Lion implementation, parameter-group construction without weight
decay on norms and biases, warmup + cosine learning-rate schedule and an
EMA model with the power-law warmup from the diffusion-policy paper.
"""
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
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                buf = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                update = buf.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                buf.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(optimizer, step, base_lr, warmup, total, min_ratio=0.05):
    if step < warmup:
        scale = (step + 1) / warmup
    else:
        progress = (step - warmup) / max(1, total - warmup)
        scale = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    for g in optimizer.param_groups:
        g["lr"] = base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305


class EMAModel:
    def __init__(self, model, power=0.75, max_decay=0.9999):
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.power, self.max_decay, self.count = power, max_decay, 0

    @torch.no_grad()
    def update(self, model):
        self.count += 1
        decay = min(self.max_decay, max(0.0, 1 - (1 + self.count) ** -self.power))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v, alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)


def init_weights(m):
    if isinstance(m, (nn.Linear, nn.Conv1d)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if m.bias is not None:
            m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
