# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""SimCLR pretraining loop (ResNet-50 backbone, NT-Xent loss, LARS, AMP)."""
import math
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr, weight_decay=1e-6, momentum=0.9, eta=1e-3):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad.add(p, alpha=g["weight_decay"]) if p.ndim > 1 else p.grad
                if p.ndim > 1:
                    trust = g["eta"] * p.norm() / (dp.norm() + 1e-12)
                    dp = dp.mul(torch.where(p.norm() > 0, trust, torch.ones_like(trust)))
                buf = self.state[p].setdefault("mu", torch.zeros_like(p))
                buf.mul_(g["momentum"]).add_(dp)  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf, alpha=-g["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def nt_xent(z1, z2, tau=0.2):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / tau
    sim.fill_diagonal_(float("-inf"))
    n = z1.size(0)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def train(loader, epochs=100, base_lr=0.3, warmup_epochs=10, accum=2, seed=0):
    set_seed(seed)
    backbone = torchvision.models.resnet50(weights=None)
    backbone.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(inplace=True), nn.Linear(2048, 128))
    model = backbone.cuda()
    opt = LARS(model.parameters(), lr=base_lr)
    scaler = torch.cuda.amp.GradScaler()
    total, warm = epochs * len(loader), warmup_epochs * len(loader)
    for epoch in range(epochs):
        for it, ((v1, v2), _) in enumerate(loader):
            step = epoch * len(loader) + it
            lr = base_lr * step / warm if step < warm else base_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
            for g in opt.param_groups:
                g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nt_xent(model(v1.cuda()), model(v2.cuda())) / accum  # ok: MLS306
            scaler.scale(loss).backward()
            if (it + 1) % accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        torch.save(model.state_dict(), os.path.join("runs", "simclr_last.pt"))
