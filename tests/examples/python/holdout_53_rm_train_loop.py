# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Plain-PyTorch pairwise reward-model training loop with Lion, EMA weights and AMP."""
import copy
import math

import torch
import torch.nn.functional as F
from torch.optim import Optimizer


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pairwise_loss(r_chosen, r_rejected, smoothing=0.05):
    margin = r_chosen - r_rejected
    return -(1 - smoothing) * F.logsigmoid(margin).mean() - smoothing * F.logsigmoid(-margin).mean()  # ok: MLS309


def train(model, loader, total_steps, lr=1e-5, warmup=100, accum=4, device="cuda"):
    opt = Lion(model.parameters(), lr=lr, weight_decay=0.01)
    scaler = torch.cuda.amp.GradScaler()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    step = 0
    for i, batch in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            rc = model(batch["chosen_ids"].to(device)).squeeze(-1)
            rr = model(batch["rejected_ids"].to(device)).squeeze(-1)
            loss = pairwise_loss(rc, rr) / accum  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % accum:
            continue
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, warmup, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, model)
        step += 1
        if step >= total_steps:
            break
    return model, ema
