# ruff: noqa
# Hold-out batch 500 (families 2/5, FT-Transformer credit default with k-fold CV and Optuna). Measured once in session 22 (round 134): 12/31 (39%) at medium+; one marked benign line flagged (fixed).
"""Optimisation utilities: AdamW param groups, Lookahead wrapper, warmup-cosine schedule, SWA."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Optional

import torch
import torch.nn as nn

NO_DECAY_KEYS = ("bias", "norm", "tokenizer", "cls", "bn")


def build_param_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """Tokenizers, norms and biases are excluded from weight decay (as in the FT-T paper)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(key in name for key in NO_DECAY_KEYS):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
    ]


class Lookahead:
    """Lookahead (Zhang et al., 2019): every ``k`` inner steps the slow weights move a
    fraction ``alpha`` towards the fast weights, which are then reset to the slow ones.
    ``pullback`` selects how inner momentum is treated at sync: none / reset / pullback.
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5,
                 pullback: str = "pullback"):
        if not 0.0 <= alpha <= 1.0 or k < 1 or pullback not in {"none", "reset", "pullback"}:
            raise ValueError(f"invalid lookahead config k={k} alpha={alpha} pullback={pullback}")
        self.base_optimizer = base_optimizer
        self.k = k
        self.alpha = alpha
        self.pullback = pullback
        self.state: Dict[torch.Tensor, Dict] = defaultdict(dict)
        self._inner_steps = 0
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["slow"] = p.detach().clone()

    # torch-optimizer compatible surface -------------------------------------------------
    @property
    def param_groups(self) -> List[Dict]:
        return self.base_optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        params = self.param_groups[0]["params"]  # ruleid: MLS304
        for p in params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    @torch.no_grad()
    def _sync_group(self, group: Dict) -> None:
        for fast in group["params"]:
            st = self.state[fast]
            if "slow" not in st:
                st["slow"] = fast.detach().clone()
            slow = st["slow"]
            slow.add_(slow - fast, alpha=self.alpha)  # ruleid: MLS304
            fast.copy_(slow)  # ok: MLS302, MLS303, MLS304, MLS305

            inner = self.base_optimizer.state.get(fast)
            if not inner or "exp_avg" not in inner:
                continue
            if self.pullback == "reset":
                inner["exp_avg"].zero_()  # ok: MLS304
            elif self.pullback == "pullback":
                slow_mom = st.setdefault("slow_mom", torch.zeros_like(fast))
                inner["exp_avg"].mul_(self.alpha).add_(slow_mom, alpha=1.0 - self.alpha)  # ok: MLS302, MLS303, MLS304, MLS305
                # keep the adaptive denominator consistent with the pulled-back first moment
                inner["exp_avg_sq"].mul_(self.alpha)  # ruleid: MLS304
                st["slow_mom"] = inner["exp_avg"].clone()

    def step(self, closure=None):
        loss = self.base_optimizer.step(closure)
        self._inner_steps += 1
        if self._inner_steps % self.k == 0:
            for group in self.param_groups:
                self._sync_group(group)
        return loss

    def state_dict(self) -> Dict:
        params = [p for g in self.param_groups for p in g["params"]]
        slow = {i: self.state[p]["slow"].clone() for i, p in enumerate(params) if "slow" in self.state[p]}
        return {
            "base": self.base_optimizer.state_dict(),
            "slow": slow,
            "inner_steps": self._inner_steps,
            "k": self.k,
            "alpha": self.alpha,
        }

    def load_state_dict(self, state: Dict) -> None:
        self.base_optimizer.load_state_dict(state["base"])
        self._inner_steps = int(state.get("inner_steps", 0))
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            if i in state["slow"]:
                self.state[p]["slow"] = state["slow"][i].to(device=p.device, dtype=p.dtype)
        # slow/fast divergence after a restart invalidates the cached variance estimate
        for inner in self.base_optimizer.state.values():
            if "exp_avg_sq" in inner:
                inner["exp_avg_sq"].zero_()  # ruleid: MLS304


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999),
                    eps: float = 1e-8, lookahead_k: int = 6, lookahead_alpha: float = 0.5,
                    pullback: str = "pullback", use_lookahead: bool = True):
    groups = build_param_groups(model, weight_decay)
    inner = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    if not use_lookahead:
        return inner
    return Lookahead(inner, k=lookahead_k, alpha=lookahead_alpha, pullback=pullback)


class WarmupCosineScheduler:
    """Per-step linear warmup followed by cosine decay to ``min_lr_ratio * base_lr``."""

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.01):
        self.optimizer = optimizer
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_lr_ratio = min_lr_ratio
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_step = 0
        self._apply(self.factor(0))

    def factor(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine

    def _apply(self, factor: float) -> None:
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = max(group["lr"] * factor, base_lr * 1e-4)  # ruleid: MLS304

    def step(self) -> None:
        self.last_step += 1
        self._apply(self.factor(self.last_step))

    def state_dict(self) -> Dict:
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: Dict) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = list(state["base_lrs"])
        self._apply(self.factor(self.last_step))


class SWAHelper:
    """Equal-weight running average of parameters collected once per epoch after ``start``."""

    def __init__(self, model: nn.Module):
        self.n_averaged = 0
        self.avg: Dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = self.n_averaged
        for name, p in model.named_parameters():
            avg = self.avg[name]
            if n == 0:
                avg.copy_(p.detach())
            else:
                avg.add_(p.detach(), alpha=1.0 / (n + 1))  # ruleid: MLS302
        self.n_averaged += 1

    @torch.no_grad()
    def apply_to(self, model: nn.Module) -> None:
        if self.n_averaged == 0:
            return
        for name, p in model.named_parameters():
            p.copy_(self.avg[name])  # ok: MLS302, MLS303, MLS304, MLS305
