# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""DDP training loop with preemption-safe checkpointing and a LAMB-style optimizer."""
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                upd = st["m"] / (st["v"].sqrt() + group["eps"]) + group["weight_decay"] * p
                trust = (p.norm() / upd.norm().clamp(min=1e-12)).clamp(max=10.0)
                p.add_(upd, alpha=-group["lr"] * float(trust))  # ok: MLS302, MLS303, MLS304, MLS305


def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(m.bias)


def train(model, loader, sampler, epochs, ckpt="ckpt/last.pt"):
    rank = dist.get_rank()
    model.apply(init_weights)
    ddp = DDP(model.cuda(), device_ids=[torch.cuda.current_device()])
    opt = Lamb(ddp.parameters(), lr=2e-3)
    state = {"epoch": 0}

    def _on_sigterm(signum, frame):
        if rank == 0:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), **state}, ckpt)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    for epoch in range(epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)  # ok: MLS301
        for x, y in loader:
            loss = nn.functional.cross_entropy(ddp(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dist.all_reduce(loss.detach(), op=dist.ReduceOp.AVG)  # ok: MLS306
        if rank == 0:  # ok: MLS308
            print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
            os.makedirs(os.path.dirname(ckpt), exist_ok=True)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), **state}, ckpt)
        dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
