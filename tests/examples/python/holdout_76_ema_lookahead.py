# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Model EMA, Lookahead wrapper, head init and warmup scheduling used by the image pipelines."""
import copy
import math

import torch
import torch.nn as nn


class ModelEma:
    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        msd = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            v = msd[k].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(v, alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                ema_v.copy_(v)  # ok: MLS302, MLS303, MLS304, MLS305


class Lookahead(torch.optim.Optimizer):
    def __init__(self, base, k=5, alpha=0.5):
        self.base, self.k, self.alpha = base, k, alpha
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults
        self._slow = [[p.detach().clone() for p in g["params"]] for g in self.param_groups]
        self._steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.base.step(closure)
        self._steps += 1
        if self._steps % self.k == 0:
            for group, slow in zip(self.param_groups, self._slow):
                for p, s in zip(group["params"], slow):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def init_head(head: nn.Linear, prior=None):
    nn.init.trunc_normal_(head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    if prior is not None:
        head.bias.data.fill_(-math.log((1 - prior) / prior))  # ok: MLS302, MLS303, MLS304, MLS305
    else:
        nn.init.zeros_(head.bias)


def warmup_cosine(optimizer, step, total, warmup, base_lrs, min_ratio=0.01):
    if step < warmup:
        scale = (step + 1) / warmup
    else:
        t = (step - warmup) / max(1, total - warmup)
        scale = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    for g, lr in zip(optimizer.param_groups, base_lrs):
        g["lr"] = lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
