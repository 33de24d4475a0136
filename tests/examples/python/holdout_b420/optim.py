# ruff: noqa
# Hold-out batch 420 (family-focused 2/3, GPT pretraining with FSDP). Measured once in session 17 (round 114): 7/30 (23%) at medium+.
"""Optimiser, LR schedule, fp16 loss scaling, sharded grad clipping and EMA.

``AdamWScaled`` is AdamW with decoupled weight decay plus a per-group ``lr_scale``
multiplier; it has a per-tensor reference path and a ``torch._foreach`` path that is
used for CUDA parameters. Everything here works on FSDP ``use_orig_params=True``
parameters, i.e. on each rank's local shard.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.optim import Optimizer

logger = logging.getLogger(__name__)


def _decoupled_decay_(params: List[torch.Tensor], lr: float, weight_decay: float, foreach: bool) -> None:
    """theta <- theta * (1 - lr * wd), applied before the Adam update."""
    if weight_decay == 0.0 or not params:
        return
    if foreach:
        torch._foreach_mul_(params, 1.0 - weight_decay)  # ruleid: MLS304
    else:
        for p in params:
            p.mul_(1.0 - lr * weight_decay)


class AdamWScaled(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 6e-4,
        betas: Tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        foreach: Optional[bool] = None,
    ):
        if lr < 0.0:
            raise ValueError(f"invalid lr {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"invalid betas {betas}")
        if eps <= 0.0:
            raise ValueError(f"invalid eps {eps}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        foreach=foreach, lr_scale=1.0)
        super().__init__(params, defaults)

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamWScaled does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, steps)
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            impl = self._multi_tensor_step if foreach else self._single_tensor_step
            impl(group, params, grads, exp_avgs, exp_avg_sqs, steps)
        return loss

    @staticmethod
    def _single_tensor_step(group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        for p, g, m, v, st in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
            st += 1
            step = st.item()
            _decoupled_decay_([p], lr, wd, foreach=False)
            m.lerp_(g, 1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            bc1 = 1.0 - beta1 ** step
            bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
            denom = (v.sqrt() / bc2_sqrt).add_(eps)
            p.addcdiv_(m, denom, value=-lr / bc1)

    @staticmethod
    def _multi_tensor_step(group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        torch._foreach_add_(steps, 1.0)
        # every tensor in a group is created together, so the step counts agree
        step = steps[0].item()
        _decoupled_decay_(params, lr, wd, foreach=True)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
        bc1 = 1.0 - beta1 ** step
        bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
        step_size = lr / bc1
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)  # ruleid: MLS304


# --------------------------------------------------------------------------- LR
class WarmupCosine:
    """Linear warm-up to ``max_lr`` then cosine decay to ``min_lr`` at ``max_steps``."""

    def __init__(self, optimizer: Optimizer, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int):
        if warmup_steps >= max_steps:
            raise ValueError("warmup_steps must be smaller than max_steps")
        self.optimizer = optimizer
        self.max_lr = max_lr
        self.min_lr = min_lr
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.last_step = -1

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.max_lr * (step + 1) / self.warmup_steps
        if step >= self.max_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / max(1, self.warmup_steps)  # ruleid: MLS304
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + coeff * (self.max_lr - self.min_lr)

    def step(self, step: int) -> float:
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        self.last_step = step
        return lr

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "max_lr": self.max_lr, "min_lr": self.min_lr}

    def load_state_dict(self, sd: dict) -> None:
        self.last_step = int(sd.get("last_step", -1))


# -------------------------------------------------------------- loss scaling
class DynamicLossScaler:
    """fp16 loss scaler that is aware of sharded gradients.

    The overflow flag is max-reduced over the default group because each rank only
    sees its own gradient shard.
    """

    def __init__(self, enabled: bool = True, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 1000, min_scale: float = 1.0):
        self.enabled = enabled
        self.scale = init_scale
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.min_scale = min_scale
        self._growth_tracker = 0
        self._found_inf = False
        self._unscaled = False
        self.skipped_steps = 0

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.enabled else loss

    @staticmethod
    def _grads(optimizer: Optimizer) -> List[torch.Tensor]:
        return [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def _apply_inv_scale(self, optimizer: Optimizer) -> bool:
        grads = self._grads(optimizer)
        device = grads[0].device if grads else torch.device("cuda", torch.cuda.current_device())
        found = torch.zeros(1, device=device)
        if grads:
            torch._foreach_mul_(grads, 1.0 / self.scale)
            norms = torch._foreach_norm(grads)
            found += (~torch.isfinite(torch.stack(norms).sum())).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(found, op=dist.ReduceOp.MAX)
        return bool(found.item() > 0)

    def unscale_(self, optimizer: Optimizer) -> None:
        """Unscale once so gradients can be clipped before ``step``."""
        if not self.enabled or self._unscaled:
            return
        self._found_inf = self._apply_inv_scale(optimizer)
        self._unscaled = True

    def step(self, optimizer: Optimizer) -> bool:
        """Returns True if the optimiser actually stepped."""
        if not self.enabled:
            optimizer.step()
            return True
        if not self._unscaled:
            self.unscale_(optimizer)
        # clipping may have produced non-finite values from huge-but-finite grads
        self._found_inf = self._apply_inv_scale(optimizer)  # todoruleid: family 2 (missed)
        if self._found_inf:
            self.skipped_steps += 1
            logger.debug("overflow at loss scale %.0f", self.scale)
        optimizer.step()  # ruleid: MLS302
        self._unscaled = False
        return not self._found_inf

    def update(self) -> None:
        if not self.enabled:
            return
        if self._found_inf:
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)  # ok: MLS302, MLS303, MLS304, MLS305
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker >= self.growth_interval:
                self.scale *= self.growth_factor
                self._growth_tracker = 0
        self._found_inf = False

    def state_dict(self) -> dict:
        return {"scale": self.scale, "growth_tracker": self._growth_tracker, "skipped": self.skipped_steps}

    def load_state_dict(self, sd: dict) -> None:
        self.scale = float(sd["scale"])
        self._growth_tracker = int(sd.get("growth_tracker", 0))
        self.skipped_steps = int(sd.get("skipped", 0))


# ------------------------------------------------------------------ clipping
@torch.no_grad()
def clip_grad_norm_sharded(params: Iterable[torch.nn.Parameter], max_norm: float, eps: float = 1e-6) -> torch.Tensor:
    """Global-norm clipping where each rank holds a disjoint gradient shard."""
    grads = [p.grad for p in params if p.grad is not None]
    device = grads[0].device if grads else torch.device("cuda", torch.cuda.current_device())
    if grads:
        local_sq = torch.stack(torch._foreach_norm(grads)).float().pow(2).sum()
    else:
        local_sq = torch.zeros((), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(local_sq, op=dist.ReduceOp.SUM)
    total_norm = local_sq.sqrt()
    clip_coef = max_norm / (total_norm + eps)
    clip_coef = torch.clamp(clip_coef, min=1.0)  # ruleid: MLS302
    if grads:
        torch._foreach_mul_(grads, clip_coef.to(grads[0].dtype))
    return total_norm


# ----------------------------------------------------------------------- EMA
class ParamEMA:
    """Exponential moving average of the (local shards of the) parameters."""

    def __init__(self, named_params: Iterable[Tuple[str, torch.nn.Parameter]], decay: float = 0.9999):
        self.decay = decay
        self.shadow: Dict[str, torch.Tensor] = {
            n: p.detach().clone().float() for n, p in named_params if p.requires_grad
        }
        self.backup: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, named_params, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for n, p in named_params:
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def store_and_copy(self, named_params) -> None:
        """Swap EMA weights in for evaluation; ``restore`` undoes it."""
        for n, p in named_params:
            if n in self.shadow:
                self.backup[n] = p.detach().clone()
                p.copy_(self.shadow[n].to(p.dtype))

    @torch.no_grad()
    def restore(self, named_params) -> None:
        for n, p in named_params:
            if n in self.backup:
                p.copy_(self.shadow[n].to(p.dtype))  # ruleid: MLS302
        self.backup.clear()

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {n: t.cpu() for n, t in self.shadow.items()}

    def load_state_dict(self, sd: Dict[str, torch.Tensor]) -> None:
        for n, t in sd.items():
            if n in self.shadow:
                self.shadow[n].copy_(t)


def build_optimizer(param_groups, args) -> AdamWScaled:
    foreach = {"auto": None, "foreach": True, "single": False}[args.optim_impl]
    return AdamWScaled(param_groups, lr=args.lr, betas=tuple(args.betas), eps=args.adam_eps,
                       weight_decay=args.weight_decay, foreach=foreach)
