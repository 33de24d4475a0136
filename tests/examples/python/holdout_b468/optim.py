# ruff: noqa
# Hold-out batch 468 (family-focused 2/5, street-scene segmentation with Lightning). Measured once in session 20 (round 126): 10/30 (33%) at medium+.
"""Optimisation utilities: SGD with lookahead, poly LR, parameter groups and model EMA."""
from __future__ import annotations

import copy
import math
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

_NO_DECAY_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class LookaheadSGD(Optimizer):
    """SGD (heavy-ball / Nesterov) with Lookahead slow weights (Zhang et al., 2019).

    Every ``k`` fast steps the slow weights move ``alpha`` of the way towards the fast
    weights and the fast weights are reset to the slow ones.
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                 nesterov: bool = False, k: int = 5, alpha: float = 0.5, pullback: str = "none"):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"invalid lookahead alpha {alpha}")
        if k < 1:
            raise ValueError(f"invalid lookahead k {k}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)
        self.k = k
        self.alpha = alpha
        self.pullback = pullback
        self._fast_steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr = group["lr"]
            mom = group["momentum"]
            wd = group["weight_decay"]
            prev_lr = group.get("prev_lr", lr)
            ratio = prev_lr / lr if lr > 0 else 1.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "slow" not in state:
                    state["slow"] = p.detach().clone()
                d_p = p.grad
                if wd != 0:
                    d_p = d_p.add(p, alpha=-wd)  # ruleid: MLS304
                if mom != 0:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = d_p.detach().clone()
                        state["momentum_buffer"] = buf
                    else:
                        if ratio != 1.0:
                            buf.mul_(ratio)  # todoruleid: family 2 (missed)
                        buf.mul_(mom).add_(d_p)
                    d_p = d_p.add(buf, alpha=mom) if group["nesterov"] else buf
                p.add_(d_p, alpha=-lr)
            group["prev_lr"] = lr

        self._fast_steps += 1
        if self._fast_steps % self.k == 0:
            self._sync_slow()
        return loss

    @torch.no_grad()
    def _sync_slow(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                slow = state.get("slow")
                if slow is None:
                    continue
                slow.add_(slow - p, alpha=self.alpha)  # ruleid: MLS304
                p.copy_(slow)  # ok: MLS302, MLS303, MLS304, MLS305
                if self.pullback == "reset" and "momentum_buffer" in state:
                    state["momentum_buffer"].zero_()

    def state_dict(self):
        sd = super().state_dict()
        sd["lookahead"] = {"fast_steps": self._fast_steps, "k": self.k, "alpha": self.alpha}
        return sd

    def load_state_dict(self, state_dict):
        la = state_dict.pop("lookahead", None)
        super().load_state_dict(state_dict)
        if la is not None:
            self._fast_steps = int(la.get("fast_steps", 0))


def _zero_grad_flat(self, set_to_none: bool = True) -> None:
    """Flat zero_grad: avoids the per-device foreach grouping, which is slow with many small groups."""
    for group in self.param_groups:
        for p in group["params"]:
            if p.grad is not None and not set_to_none:
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                p.grad.zero_()


Optimizer.zero_grad = _zero_grad_flat  # ruleid: MLS305


class PolyLR(LRScheduler):
    """lr = base_lr * (1 - iter / max_iters) ** power, with an optional linear warm-up."""

    def __init__(self, optimizer: Optimizer, max_iters: int, power: float = 0.9,
                 warmup_iters: int = 0, warmup_ratio: float = 1e-3, min_lr: float = 1e-6,
                 last_epoch: int = -1):
        self.max_iters = max(1, int(max_iters))
        self.power = power
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def _factor(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup_iters
        return (1.0 - min(it, self.max_iters) / self.max_iters) ** self.power  # ok: MLS302, MLS303, MLS304, MLS305

    def get_lr(self) -> List[float]:
        f = self._factor(self.last_epoch)
        return [max(base * f, self.min_lr) for base in self.base_lrs]


def _is_no_decay(module: nn.Module, pname: str) -> bool:
    return isinstance(module, _NO_DECAY_TYPES) or pname == "bias"


def build_param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                       head_lr_mult: float = 10.0) -> List[Dict]:
    """Backbone/head x decay/no-decay parameter groups.

    The randomly initialised head (ASPP, decoder, classifier) trains with ``head_lr_mult``
    times the base LR; norm layers and biases are excluded from weight decay.
    """
    buckets: Dict[str, Dict] = {}
    seen = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_backbone = mname.startswith("backbone")
            no_decay = _is_no_decay(module, pname)
            key = ("backbone" if is_backbone else "head") + ("_no_decay" if no_decay else "")
            if key not in buckets:
                buckets[key] = {
                    "name": key,
                    "params": [],
                    "lr": base_lr * (head_lr_mult if is_backbone else 1.0),  # todoruleid: family 2 (missed)
                    "weight_decay": 0.0 if no_decay else weight_decay,  # ok: MLS302, MLS303, MLS304, MLS305
                }
            buckets[key]["params"].append(p)
    return [buckets[k] for k in sorted(buckets)]


class ModelEMA:
    """Exponential moving average of model weights with a warm-up on the decay."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: int = 2000):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / max(1, self.warmup)))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            src = msd[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src, alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                v.copy_(src)

    def state_dict(self) -> Dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state.get("updates", 0))
