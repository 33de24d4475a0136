# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Optimizer utilities for protein LM fine-tuning: Lion, EMA weights and layer-wise LR decay."""
import copy
import math

import torch
from torch.optim import Optimizer


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                update = exp_avg.mul(beta1).add(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        for e, m in zip(self.ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(m.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305


def llrd_param_groups(model, base_lr, decay=0.85, weight_decay=0.01):
    layers = list(model.backbone.encoder.layer)
    groups = [{"params": list(model.head.parameters()), "lr": base_lr, "weight_decay": weight_decay}]
    for depth, layer in enumerate(reversed(layers), start=1):
        groups.append({"params": list(layer.parameters()), "lr": base_lr * decay ** depth,  # ok: MLS302, MLS303, MLS304, MLS305
                       "weight_decay": weight_decay})
    groups.append({"params": list(model.backbone.embeddings.parameters()),
                   "lr": base_lr * decay ** (len(layers) + 1), "weight_decay": 0.0})
    return groups


def warmup_cosine(optimizer, warmup, total, min_ratio=0.05):
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)  # ok: MLS302, MLS303, MLS304, MLS305
