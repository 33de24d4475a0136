# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Plain-PyTorch trainer with Lion optimizer, EMA weights, warmup and early stopping."""
import copy
import math

import torch
import torch.nn as nn


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305


class EMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.data.mul_(self.decay).add_(p.data, alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_weights(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if m.bias is not None:
            m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def fit(model, train_loader, evaluate, epochs=50, base_lr=3e-4, warmup=500, patience=5):
    model.apply(init_weights)
    opt, ema = Lion(model.parameters(), lr=base_lr, weight_decay=0.1), EMA(model)
    total, step, best, bad = epochs * len(train_loader), 0, float("inf"), 0
    for epoch in range(epochs):
        for x, y in train_loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, base_lr, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update(model)
            step += 1
        val = evaluate(ema.shadow)
        best, bad = (val, 0) if val < best else (best, bad + 1)
        if bad >= patience:
            break  # ok: MLS307
    return ema.shadow
