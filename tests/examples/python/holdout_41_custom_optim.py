# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Lion optimizer, warmup-cosine schedule and weight init used by the small-model recipes."""
import math

import torch
import torch.nn as nn
from torch.optim import Optimizer


class Lion(Optimizer):
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
                    state["exp_avg"] = torch.zeros_like(p)  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg = state["exp_avg"]
                p.data.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def set_lr(optimizer, step, base_lr, warmup, total, min_ratio=0.1):
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        t = (step - warmup) / max(1, total - warmup)
        lr = base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    for g in optimizer.param_groups:
        g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def init_weights(module, std=0.02):
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(0.0, std)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, std)
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


def train_step(model, batch, opt, scaler, step, cfg):
    set_lr(opt, step, cfg["lr"], cfg["warmup"], cfg["steps"])
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(**batch).loss / cfg["accum"]  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.scale(loss).backward()
    if (step + 1) % cfg["accum"] == 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("clip", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    return loss.detach() * cfg["accum"]
