# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Optimizer, LR schedule, init and data-fetch helpers for the molecule VAE experiments."""
import math
import os
import time
import urllib.request

import torch
import torch.nn as nn

ZINC_URL = "https://data.example.com/zinc/zinc250k.csv"


class LionW(torch.optim.Optimizer):
    """Sign-momentum optimizer with decoupled weight decay."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.data.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def warmup_cosine(optimizer, step, base_lr, warmup=1000, total=100000, min_ratio=0.05):
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        lr = base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    for g in optimizer.param_groups:
        g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.GRU):
        for name, w in module.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(w)


def fetch_zinc(dest="data/zinc250k.csv", retries=4, timeout=60):
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(ZINC_URL, timeout=timeout) as r, open(dest, "wb") as fh:  # ok: MLS411, MLS412
                fh.write(r.read())
            return dest
        except OSError:
            time.sleep(5 * attempt)  # ok: MLS307
    raise RuntimeError("ZINC download failed")
