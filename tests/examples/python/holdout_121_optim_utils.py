# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Optimizer utilities: decoupled-weight-decay SGD, parameter EMA and warmup-cosine LR."""
import math

import torch
from torch.optim import Optimizer


class SGDW(Optimizer):
    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if wd:
                    p.mul_(1 - lr * wd)  # ok: MLS302, MLS303, MLS304, MLS305
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = p.grad.clone()  # ok: MLS302, MLS303, MLS304, MLS305
                else:
                    buf.mul_(mom).add_(p.grad)
                d = p.grad.add(buf, alpha=mom) if group["nesterov"] else buf
                p.add_(d, alpha=-lr)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


class ModelEMA:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)  # ok: MLS302, MLS303, MLS304, MLS305

    def copy_to(self, model):
        model.load_state_dict(self.shadow)


def warmup_cosine_lr(step, base_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def apply_lr(optimizer, step, base_lr, warmup_steps, total_steps):
    lr = warmup_cosine_lr(step, base_lr, warmup_steps, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr
