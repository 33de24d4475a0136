# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Optimizer utilities for large embedding recommenders.

Row-wise Adagrad for embedding tables (one accumulator per row), an EMA of the
dense weights for serving, linear-warmup/cosine LR and embedding initialisation.
"""
import math

import torch
from torch.optim import Optimizer


class RowWiseAdagrad(Optimizer):
    def __init__(self, params, lr=0.01, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.size(0), device=p.device, dtype=p.dtype)
                state["sum"].add_(g.pow(2).mean(dim=1))  # ok: MLS302, MLS303, MLS304, MLS305
                std = state["sum"].sqrt().add_(group["eps"]).unsqueeze(1)
                p.addcdiv_(g, std, value=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class DenseEMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if "emb" not in n}

    @torch.no_grad()
    def update(self, model):
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def warmup_cosine(optimizer, step, base_lr, warmup=2000, total=200000, min_ratio=0.05):
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        lr = base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def init_embedding_(table):
    bound = 1.0 / math.sqrt(table.num_embeddings)
    with torch.no_grad():
        table.weight.uniform_(-bound, bound)  # ok: MLS302, MLS303, MLS304, MLS305
        if table.padding_idx is not None:
            table.weight[table.padding_idx].zero_()  # ok: MLS302, MLS303, MLS304, MLS305
