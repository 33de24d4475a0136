# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Optimizer, EMA and initialisation utilities for the translation model."""
import math

import torch
import torch.nn as nn


class AdamWStable(torch.optim.Optimizer):
    """AdamW with decoupled weight decay and bias correction."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
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
                denom = (exp_avg_sq.sqrt() / math.sqrt(bc2)).add_(group["eps"])
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.addcdiv_(exp_avg, denom, value=-group["lr"] / bc1)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class ModelEMA:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_transformer_weights(module, d_model=512):
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=d_model ** -0.5)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()  # ok: MLS302, MLS303, MLS304, MLS305
