# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""BYOL pretraining with a momentum target network and a LARS optimizer."""
import math
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import ImageFilter


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, eta=0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=group["weight_decay"]) if p.ndim > 1 else p.grad
                if p.ndim > 1:
                    w_norm, g_norm = p.norm(), d_p.norm()
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, 1.0)
                    d_p = d_p.mul(trust)
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(d_p)  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


class RandomBlur:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:  # ok: MLS309
            img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))
        return img


def mlp(dim_in, hidden=4096, out=256):
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


@torch.no_grad()
def update_target(online, target, step, total_steps, base_m=0.996):
    m = 1 - (1 - base_m) * (math.cos(math.pi * step / total_steps) + 1) / 2
    for po, pt in zip(online.parameters(), target.parameters()):
        pt.data.mul_(m).add_(po.data, alpha=1 - m)  # ok: MLS302, MLS303, MLS304, MLS305


def byol_loss(p, z):
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


def train_step(online, predictor, target, opt, v1, v2, step, total_steps):
    loss = byol_loss(predictor(online(v1)), target(v2)) + byol_loss(predictor(online(v2)), target(v1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    update_target(online, target, step, total_steps)
    return loss.item()
