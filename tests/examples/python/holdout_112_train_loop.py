# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""DDP training loop with AMP, gradient accumulation, linear warmup and an EMA copy."""
import copy
import math

import torch
import torch.distributed as dist


class SGDW(torch.optim.Optimizer):
    """SGD with momentum and decoupled weight decay."""

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=5e-4):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)  # ok: MLS302, MLS303, MLS304, MLS305
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(model, loader, epochs, base_lr=0.1, accum=4, warmup=500, ema_decay=0.999, save_path="ckpt.pt"):
    opt = SGDW(model.parameters(), lr=base_lr)
    scaler = torch.cuda.amp.GradScaler()
    ema = copy.deepcopy(model.module if hasattr(model, "module") else model).eval()
    total = epochs * len(loader) // accum
    step = 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            scaler.scale(loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, base_lr, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                src = model.module if hasattr(model, "module") else model
                for e, p in zip(ema.parameters(), src.parameters()):
                    e.mul_(ema_decay).add_(p.detach(), alpha=1 - ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
        if dist.get_rank() == 0:  # ok: MLS308
            torch.save({"model": model.module.state_dict(), "ema": ema.state_dict(), "epoch": epoch}, save_path)
        dist.barrier()  # ok: MLS307
    return ema
