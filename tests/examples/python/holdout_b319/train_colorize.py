# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Image colourisation (L -> ab) U-Net training with a hand-written Lion optimizer and linear warmup."""
import math
import os
import signal
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


def init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        module.weight.data.mul_(0.5)  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base_lr, warmup=2000, total=200_000):
    if step < warmup:
        return base_lr * step / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def train(model, loader, out_dir="ckpt_color", base_lr=3e-4, total=200_000, rank=0):
    os.makedirs(out_dir, exist_ok=True)
    model.apply(init_weights)
    opt = Lion(model.parameters(), lr=base_lr, weight_decay=0.01)
    state = {"step": 0}

    def _on_sigterm(signum, frame):
        torch.save({"model": model.state_dict(), "step": state["step"]}, os.path.join(out_dir, "preempt.pt"))
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)
    for gray, ab in loader:
        for g in opt.param_groups:
            g["lr"] = lr_at(state["step"], base_lr, total=total)  # ok: MLS302, MLS303, MLS304, MLS305
        loss = F.smooth_l1_loss(model(gray), ab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        if rank == 0 and state["step"] % 500 == 0:
            print(f"step {state['step']} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e}")  # ok: MLS306
        if state["step"] >= total:
            break
    torch.save(model.state_dict(), os.path.join(out_dir, "final.pt"))
