# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Shared utilities for DDPM/EDM training: seeding, EMA, init, LR warmup and noise schedules."""
import math
import random

import numpy as np
import torch
import torch.nn as nn


def set_seed(seed: int, rank: int = 0) -> None:
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999):
    f = lambda t: math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)

    @torch.no_grad()
    def copy_to(self, model: nn.Module):
        model.load_state_dict(self.shadow, strict=True)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-init the last conv of each residual block so the UNet starts as identity."""
    for p in module.parameters():
        p.detach().zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    return module


def warmup_lr(optimizer, step: int, base_lr: float, warmup_steps: int = 5000):
    lr = base_lr * min(1.0, (step + 1) / warmup_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


@torch.no_grad()
def sample_noise(shape, seed: int, device="cuda"):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)  # ok: MLS301
    return torch.randn(shape, generator=gen, device=device)
