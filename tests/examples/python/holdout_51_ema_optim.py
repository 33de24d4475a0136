# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Exponential moving average of weights, a Lion optimizer, and warmup helpers."""
import math

import torch


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
                self.shadow[k].copy_(v)

    def copy_to(self, model):
        model.load_state_dict(self.shadow)


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])
                exp_avg.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def warmup_cosine_lr(optimizer, step, base_lr, warmup, total):
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        lr = 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def track_grad_norms(model, store):
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.register_hook(lambda g, n=name: store.__setitem__(n, g.norm().item()))  # ok: MLS302, MLS303, MLS304, MLS305
