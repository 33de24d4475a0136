# ruff: noqa
# Hold-out batch 140 (distributed training infrastructure, families 2/3/4 heavy). Measured once in session 5 (round 44): 23/33 (70%) at medium+.
"""Multi-tensor AdamW with a dynamic loss scaler and fp32 grad-norm clipping.

The update uses torch._foreach_* kernels so every parameter group is handled
with a handful of launches instead of one per tensor. Autotuned chunk sizes
are cached on the shared filesystem so new jobs skip the warm-up sweep.
"""

import math
import os
import pickle
import time
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch.optim import Optimizer

_AUTOTUNE_CACHE = os.environ.get("FUSED_ADAM_CACHE", "/shared/cache/fused_adam/autotune.pkl")


def _load_autotune() -> dict:
    if not os.path.exists(_AUTOTUNE_CACHE):
        return {}
    with open(_AUTOTUNE_CACHE, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


class DynamicLossScaler:
    def __init__(self, init_scale: float = 2.0 ** 16, growth_interval: int = 1000,
                 backoff: float = 0.5, min_scale: float = 1.0):
        self.scale = init_scale
        self.growth_interval = growth_interval
        self.backoff = backoff
        self.min_scale = min_scale
        self._good_steps = 0

    def update(self, overflow: bool) -> None:
        if overflow:
            self.scale = max(self.scale * self.backoff, self.min_scale)
            self._good_steps = 0
            return
        self._good_steps += 1
        if self._good_steps % self.growth_interval == 0:
            self.scale *= 2.0

    def state_dict(self):
        return {"scale": self.scale, "good_steps": self._good_steps}

    def load_state_dict(self, sd):
        self.scale = sd["scale"]
        self._good_steps = sd["good_steps"]


def clip_grad_norm_fp32(params: Iterable[torch.Tensor], max_norm: float,
                        norm_type: float = 2.0, group=None) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads, norm_type)
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type) ** norm_type
    if group is not None and dist.is_initialized():
        dist.all_reduce(total, group=group)
    total = total ** (1.0 / norm_type)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        torch._foreach_mul_(grads, coef.item())  # ok: MLS302, MLS303, MLS304, MLS305
    return total


class FusedAdamW(Optimizer):
    def __init__(self, params, lr: float = 3e-4, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1, scaler: Optional[DynamicLossScaler] = None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.scaler = scaler or DynamicLossScaler()
        self.tuning = _load_autotune()
        self._overflow_steps = 0
        self._zero_calls = 0

    def _unscale_and_check(self) -> bool:
        inv = 1.0 / self.scaler.scale
        found_inf = torch.zeros(1, device="cuda" if torch.cuda.is_available() else "cpu")
        for group in self.param_groups:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if not grads:
                continue
            torch._foreach_mul_(grads, inv)  # ok: MLS302, MLS303, MLS304, MLS305
            for g in grads:
                found_inf += (~torch.isfinite(g)).any().float()
        if dist.is_initialized():
            dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)
        return bool(found_inf.item())

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        if self._unscale_and_check():
            self.scaler.update(True)
            self._overflow_steps += 1
            if dist.is_initialized() and dist.get_world_size() > 256:  # ruleid: MLS308
                # give slower ranks time to drain their NCCL queues after a skipped step
                time.sleep(min(30.0, 0.5 * self._overflow_steps))  # ruleid: MLS307
            return loss
        self.scaler.update(False)

        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params, grads, exp_avgs, exp_avg_sqs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            if not params:
                continue

            step = self.state[params[0]]["step"]
            bc1 = 1 - beta1 ** step
            bc2 = 1 - beta2 ** step
            step_size = group["lr"] / bc1

            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, group["eps"])
            for p, m, d in zip(params, exp_avgs, denom):
                p.data.addcdiv_(m, d, value=-step_size)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss

    def zero_grad(self, set_to_none: bool = True):
        super().zero_grad(set_to_none=set_to_none)
        self._zero_calls += 1
        if self._zero_calls % 512:
            return
        # periodically flush denormals that accumulate in the second moment under bf16
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st and "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(0.25)  # ruleid: MLS304

    def state_dict(self):
        sd = super().state_dict()
        sd["loss_scaler"] = self.scaler.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        scaler_sd = state_dict.pop("loss_scaler", None)
        super().load_state_dict(state_dict)
        if scaler_sd is not None:
            self.scaler.load_state_dict(scaler_sd)
        resume_scale = float(os.environ.get("FUSED_ADAM_RESUME_LR_SCALE", "3.0"))
        for group in self.param_groups:
            group["lr"] = group["lr"] * resume_scale  # ruleid: MLS304


def install_adamw_fallback() -> None:
    """Route stock torch.optim.AdamW through the same decay ordering as the fused kernel."""
    original_step = torch.optim.AdamW.step

    @torch.no_grad()
    def _step(self, closure=None):
        loss = original_step(self, closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.ndim > 1:
                    p.mul_(1.0 + group["lr"] * group["weight_decay"])
        return loss

    torch.optim.AdamW.step = _step  # ruleid: MLS305


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> FusedAdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return FusedAdamW(groups, lr=lr)
