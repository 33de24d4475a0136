# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Model EMA, a decoupled-weight-decay SGD and a warmup+cosine LR helper."""
import copy
import math

import torch


class ModelEMA:
    def __init__(self, model, decay=0.9999, warmup=2000):
        self.module = copy.deepcopy(model).eval()
        self.decay, self.warmup, self.updates = decay, warmup, 0
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup))
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305


class SGDW(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = p.grad.detach().clone()
                else:
                    buf.mul_(mom).add_(p.grad)  # ok: MLS302, MLS303, MLS304, MLS305
                upd = p.grad.add(buf, alpha=mom) if group["nesterov"] else buf
                p.mul_(1 - lr * wd)  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(upd, alpha=-lr)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def warmup_cosine(optimizer, step, base_lr, warmup, total, min_ratio=0.01):
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        t = (step - warmup) / max(1, total - warmup)
        lr = base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr
