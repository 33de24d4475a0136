# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Optimizers and training utilities for large-embedding CTR models.

RowWiseAdagrad keeps one accumulator per embedding row (memory-friendly for
2**22-row tables); ModelEMA keeps a shadow copy used for offline evaluation.
"""
import copy

import numpy as np
import torch


class RowWiseAdagrad(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], device=p.device, dtype=p.dtype)
                row_sq = g.pow(2).mean(dim=tuple(range(1, g.dim()))) if g.dim() > 1 else g.pow(2)
                state["sum"].add_(row_sq)  # ok: MLS302, MLS303, MLS304, MLS305
                std = state["sum"].sqrt().add_(group["eps"])
                shape = (-1,) + (1,) * (g.dim() - 1)
                p.addcdiv_(g, std.view(shape), value=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_embeddings(emb, scale=1e-2):
    with torch.no_grad():
        emb.weight.uniform_(-scale, scale)  # ok: MLS302, MLS303, MLS304, MLS305


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def split_params(model):
    sparse = [p for n, p in model.named_parameters() if "embedding" in n]
    dense = [p for n, p in model.named_parameters() if "embedding" not in n]
    return sparse, dense
