# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""Optimisation utilities: parameter EMA, Lookahead wrapper and linear-warmup LR."""
import copy
import math

import torch


class ModelEMA:
    """Exponential moving average of model weights, evaluated instead of the raw model."""

    def __init__(self, model, decay=0.999, warmup=2000):
        self.ema = copy.deepcopy(model).eval()
        self.decay, self.warmup, self.updates = decay, warmup, 0
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup))
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.ema.buffers(), model.buffers()):
            ema_b.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al., 2019): k fast steps, then pull slow weights toward fast ones."""

    def __init__(self, base, k=5, alpha=0.5):
        self.base, self.k, self.alpha = base, k, alpha
        self.param_groups = base.param_groups
        self.defaults = base.defaults
        self.state = base.state
        self._slow = [[p.detach().clone() for p in g["params"]] for g in self.param_groups]
        self._count = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.base.step(closure)
        self._count += 1
        if self._count % self.k == 0:
            for group, slows in zip(self.param_groups, self._slow):
                for p, slow in zip(group["params"], slows):
                    slow.add_(p - slow, alpha=self.alpha)
                    p.copy_(slow)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss

    def zero_grad(self, set_to_none=True):
        self.base.zero_grad(set_to_none=set_to_none)


def set_warmup_cosine_lr(optimizer, step, base_lr, warmup_steps, total_steps, min_lr=1e-6):
    if step < warmup_steps:
        lr = base_lr * (step + 1) / warmup_steps
    else:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr
