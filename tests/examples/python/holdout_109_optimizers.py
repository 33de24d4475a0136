# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""LAMB optimiser and warmup schedules used for the large-batch transformer runs (chapter 4, sec. 4.3)."""
import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class Lamb(torch.optim.Optimizer):
    """Layer-wise adaptive moments (You et al., 2020), without bias-correction on the trust ratio."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

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
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)  # ok: MLS302, MLS303, MLS304, MLS305
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
                m_hat = state["exp_avg"] / (1 - beta1 ** state["step"])
                v_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update, alpha=-group["lr"] * trust.item())  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def warmup_cosine(optimizer, warmup_steps, total_steps, min_ratio=0.0):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return LambdaLR(optimizer, factor)  # ok: MLS302, MLS303, MLS304, MLS305


def linear_scaled_lr(base_lr, global_batch, ref_batch=256):
    """Goyal et al. linear scaling rule, applied once when building the optimiser."""
    return base_lr * global_batch / ref_batch


def set_lr(optimizer, lr):
    """Manual override used by the LR range test in notebooks/lr_finder.ipynb."""
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
