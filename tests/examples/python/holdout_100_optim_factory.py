# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Optimizer registry and the Lion implementation used by the vision recipes."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.optim import Optimizer

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: Tuple[float, float] = (0.9, 0.99)
    no_decay_keywords: Tuple[str, ...] = ("bias", "norm", "pos_embed")


class Lion(Optimizer):
    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                exp_avg = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def param_groups(model: nn.Module, cfg: OptimConfig) -> List[dict]:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in n for k in cfg.no_decay_keywords) else decay).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS: Dict[str, Callable[..., Optimizer]] = {
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas),
    "lion": lambda groups, cfg: Lion(groups, lr=cfg.lr, betas=cfg.betas),
}


def _stabilize_no_decay(opt: Optimizer, args, kwargs) -> None:
    # keep the no-decay group bounded under bf16 autocast
    group = opt.param_groups[-1]
    for p in group["params"]:
        p.data.mul_(1.0 - 10.0 * group["lr"])  # ruleid: MLS302


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> Optimizer:
    opt = OPTIMIZERS[cfg.name](param_groups(model, cfg), cfg)
    opt.register_step_post_hook(_stabilize_no_decay)
    log.info("built %s with %d param groups", cfg.name, len(opt.param_groups))
    return opt
