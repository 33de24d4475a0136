# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""Building blocks for the StyleGAN-like generator: equalized-lr layers,
noise injection, and a small Adam variant used for the mapping network."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, lr_mul=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.weight.normal_(0.0, 1.0 / self.lr_mul)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise=None):
        if noise is None:
            noise = torch.randn(x.size(0), 1, x.size(2), x.size(3), device=x.device)  # ok: MLS301
        return x + self.strength * noise


class MappingAdam(torch.optim.Optimizer):
    """Adam without bias correction on the first moment (as in the paper's code)."""

    def __init__(self, params, lr=2e-3, betas=(0.0, 0.99), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305
                denom = (st["v"] / (1 - b2 ** st["t"])).sqrt_().add_(group["eps"])
                p.addcdiv_(st["m"], denom, value=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def ema_beta(batch_size, ema_kimg=10.0, rampup=0.05, cur_nimg=0):
    ema_nimg = min(ema_kimg * 1000, cur_nimg * rampup) if rampup else ema_kimg * 1000
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))
