# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""A compact LAMB optimizer (layer-wise adaptive moments) for large-batch pretraining."""
import math

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, clamp=10.0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, clamp=clamp)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
                bc1 = 1 - beta1 ** state["step"]
                bc2 = 1 - beta2 ** state["step"]
                update = (exp_avg / bc1) / ((exp_avg_sq / bc2).sqrt().add_(group["eps"]))
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm = p.norm().clamp(max=group["clamp"])
                u_norm = update.norm()
                trust = 1.0 if w_norm == 0 or u_norm == 0 else (w_norm / u_norm).item()
                p.add_(update, alpha=-group["lr"] * trust)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def linear_warmup_sqrt_decay(optimizer, base_lr, warmup_steps):
    def set_lr(step):
        scale = min((step + 1) / warmup_steps, math.sqrt(warmup_steps / max(step + 1, 1)))
        for group in optimizer.param_groups:
            group["lr"] = base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
    return set_lr
