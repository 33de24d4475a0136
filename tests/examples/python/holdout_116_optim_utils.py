# ruff: noqa
# Hold-out batch 116 (large-model training infrastructure). Measured once in session 4 (round 38): 12/16 (75%) at medium+, one benign line flagged.
"""Optimizer-side helpers for the pretraining stack: Lion, warmup-cosine LR, EMA, init."""
import math
import random

import numpy as np
import torch
from torch import nn


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


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
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def warmup_cosine(step, max_lr, min_lr, warmup, total):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * t))


def apply_lr(optimizer, step, cfg):
    lr = warmup_cosine(step, cfg["lr"], cfg["min_lr"], cfg["warmup_iters"], cfg["train_iters"])
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


class EMA:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_weights(module, std=0.02, n_layers=24):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)  # ok: MLS302, MLS303, MLS304, MLS305
        if getattr(module, "is_residual_out", False):
            module.weight.data.mul_(1 / math.sqrt(2 * n_layers))  # ok: MLS302, MLS303, MLS304, MLS305
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
