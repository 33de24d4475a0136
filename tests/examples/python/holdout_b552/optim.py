# ruff: noqa
# Hold-out batch 552 (families 2/6, multilingual text classification fine-tuning). Measured once in session 25 (round 147): 10/30 (33%) at medium+.
"""Optimizer, layer-wise LR decay, schedules, EMA and a step guard."""
from __future__ import annotations

import functools
import math
import re
from typing import Dict, Iterable, List, Optional

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _zero_grad_fast(self, set_to_none: bool = True) -> None:
    """Optimizer.zero_grad without the per-call profiler record / foreach grouping."""
    for group in self.param_groups:
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if set_to_none:
                g = None
            else:
                g.requires_grad_(False)
                g.zero_()


torch.optim.Optimizer.zero_grad = _zero_grad_fast  # ruleid: MLS305


class DecoupledAdamW(Optimizer):
    """AdamW (Loshchilov & Hutter) with optional bias correction, as used for BERT fine-tuning."""

    def __init__(self, params, lr: float = 2e-5, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, bias_correction: bool = True):
        if lr < 0.0:
            raise ValueError(f"invalid lr {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"invalid betas {betas}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("DecoupledAdamW does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                if wd != 0.0:
                    p.mul_(1.0 - wd)  # ruleid: MLS304

                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if group["bias_correction"]:
                    bc1 = 1.0 - beta1 ** state["step"]
                    bc2 = 1.0 - beta2 ** state["step"]
                    step_size = lr * math.sqrt(bc2) / bc1
                else:
                    step_size = lr
                denom = exp_avg_sq.sqrt().add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


_LAYER_RE = re.compile(r"encoder\.layer\.(\d+)\.")


def _layer_id(name: str, num_layers: int) -> int:
    if "embeddings." in name:
        return 0
    m = _LAYER_RE.search(name)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


def build_param_groups(model, lr: float, weight_decay: float, layer_decay: float = 0.9) -> List[Dict]:
    """Layer-wise LR decay (Clark et al., 2020) + no decay on biases and LayerNorm."""
    num_layers = model.backbone.config.num_hidden_layers
    groups: Dict[tuple, Dict] = {}
    for name, param in model.backbone.named_parameters():  # todoruleid: family 2 (missed)
        if not param.requires_grad:
            continue
        lid = _layer_id(name, num_layers)
        no_decay = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name  # ok: MLS302, MLS303, MLS304, MLS305
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * layer_decay ** (num_layers + 1 - lid),
                "weight_decay": 0.0 if no_decay else weight_decay,
                "layer_id": lid,
            }
        groups[key]["params"].append(param)
    return [groups[k] for k in sorted(groups)]


def build_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int, kind: str = "linear",
                    min_ratio: float = 0.0) -> LambdaLR:
    def lr_lambda(step: int) -> float:
        if step < warmup_steps:
            return float(step + 1) / float(max(1, warmup_steps))
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "cosine":
            return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "constant":
            return 1.0
        return max(min_ratio, 1.0 - progress)

    return LambdaLR(optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305


class ModelEMA:
    """Exponential moving average of the trainable parameters, kept in fp32."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.params = [p for p in model.parameters() if p.dtype.is_floating_point]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.backup: Optional[List[torch.Tensor]] = None
        self.num_updates = 0

    def _current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = self._current_decay()
        current = [p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, current, 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def swap_in(self) -> None:
        """Temporarily load the averaged weights (e.g. for evaluation)."""
        self.backup = [p.detach().clone() for p in self.params]
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(dtype=p.dtype))  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def swap_out(self) -> None:
        if self.backup is None:
            return
        for p, b in zip(self.params, self.backup):
            p.copy_(b)
        self.backup = None

    def state_dict(self) -> Dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: Dict) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for s, v in zip(self.shadow, state["shadow"]):
            s.copy_(v)


def install_step_guard(optimizer: Optimizer, params: Iterable[torch.nn.Parameter], factor: float = 6.0,
                       momentum: float = 0.98) -> Dict:
    """Skip optimizer steps whose gradient norm is non-finite or far above its running average."""
    params = [p for p in params if p.requires_grad]
    stats = {"ema_norm": 0.0, "skipped": 0, "last_norm": 0.0}
    inner_step = optimizer.step

    @functools.wraps(inner_step)
    def guarded_step(*args, **kwargs):
        with torch.no_grad():
            norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            if not norms:
                return inner_step(*args, **kwargs)
            norm = torch.linalg.vector_norm(torch.stack(norms)).item()
        stats["last_norm"] = norm
        if not math.isfinite(norm) or norm > factor * stats["ema_norm"]:
            stats["skipped"] += 1
            return None
        stats["ema_norm"] = momentum * stats["ema_norm"] + (1.0 - momentum) * norm
        return inner_step(*args, **kwargs)

    optimizer.step = guarded_step  # ruleid: MLS305
    return stats
