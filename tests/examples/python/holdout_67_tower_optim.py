# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Optimizer utilities for the two-tower model: row-wise Adagrad, EMA, preemption."""
import copy
import signal

import torch
import torch.nn as nn


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per embedding row (memory-light for big tables)."""

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
                    state["sum"] = torch.zeros(p.shape[0], device=p.device, dtype=torch.float32)
                state["sum"].add_(g.float().pow(2).mean(dim=tuple(range(1, g.dim()))))  # ok: MLS302, MLS303, MLS304, MLS305
                std = state["sum"].sqrt().add_(group["eps"]).view(-1, *[1] * (p.dim() - 1))
                p.addcdiv_(g, std, value=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class TowerEMA:
    def __init__(self, tower: nn.Module, decay: float = 0.999):
        self.shadow = copy.deepcopy(tower).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, tower: nn.Module):
        for s, p in zip(self.shadow.parameters(), tower.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def init_embeddings(model: nn.Module, std: float = 0.01):
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            nn.init.normal_(m.weight, mean=0.0, std=std)  # ok: MLS302, MLS303, MLS304, MLS305


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        raise SystemExit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
