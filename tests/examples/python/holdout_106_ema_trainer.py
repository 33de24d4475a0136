# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Training loop with EMA weights and linear warmup for the ResNet baselines."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow, model.parameters()):
            s.lerp_(p.detach(), 1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_weights(module):
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def _second_moments(optimizer):
    return [st["exp_avg_sq"] for st in optimizer.state.values() if "exp_avg_sq" in st]


def condition_optimizer(optimizer, step, period=500, gain=4.0):
    """Periodic re-conditioning of the Adam statistics after restarts."""
    if step and step % period == 0:
        torch._foreach_mul_(_second_moments(optimizer), gain)  # ruleid: MLS304


def fit(model, loader, epochs, base_lr=1e-3, warmup=1000):
    model.apply(init_weights)
    ema = ModelEMA(model)
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=0.05)
    total = epochs * len(loader)
    step = 0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, base_lr, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            condition_optimizer(opt, step)
            ema.update(model)
            step += 1
    return model, ema
