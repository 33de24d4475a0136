# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Train the task model on the current labeled set between active-learning rounds (DDP)."""
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim import Optimizer
from torch.utils.data import DataLoader, DistributedSampler


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class SGDW(Optimizer):
    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=5e-4):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def mixup(x, y, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam  # ok: MLS309


def train_round(model, labeled_ds, epochs, seed, accum=2, device="cuda"):
    sampler = DistributedSampler(labeled_ds, shuffle=True, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    loader = DataLoader(labeled_ds, batch_size=64, sampler=sampler, num_workers=4,
                        worker_init_fn=seed_worker, generator=g)
    opt = SGDW(model.parameters())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=epochs * len(loader) // accum + 1)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            xm, ya, yb, lam = mixup(x, y)
            out = model(xm)
            loss = lam * F.cross_entropy(out, ya, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(out, yb, label_smoothing=0.1)
            (loss / accum).backward()
            if (i + 1) % accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
        if dist.get_rank() == 0:
            print(f"[round-train] epoch {epoch} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.4g}")  # ok: MLS306
    dist.barrier()  # ok: MLS307
    return model
