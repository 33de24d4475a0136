# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Distributed trainer for a spherical Fourier neural operator on regridded reanalysis fields."""
import math
import signal
import sys

import torch
import torch.distributed as dist
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
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305


def warmup_cosine(step, total, warmup, base):
    if step < warmup:
        return base * step / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def train(model, loader, total=100_000, warmup=1_000, base_lr=3e-4, ckpt="ckpt/sfno.pt"):
    rank = dist.get_rank()
    opt = Lion(model.parameters(), lr=base_lr, weight_decay=0.1)
    step = 0

    def _save_and_exit(signum, frame):
        if rank == 0:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
        dist.barrier()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _save_and_exit)  # ok: MLS307
    for x, y in loader:
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, total, warmup, base_lr)  # ok: MLS302, MLS303, MLS304, MLS305
        loss = torch.nn.functional.mse_loss(model(x.cuda()), y.cuda())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 5000 == 0:
            if dist.get_rank() == 0:  # ok: MLS307
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
            dist.barrier()  # ok: MLS307
        if rank == 0 and step % 100 == 0:
            print(f"step {step} loss {loss.item():.5f} lr {opt.param_groups[0]['lr']:.2e}", flush=True)
        if step >= total:
            break
