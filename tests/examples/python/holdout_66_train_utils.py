# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Training utilities: model EMA, warmup-cosine LR, CutMix and gradient accumulation."""
import math

import numpy as np
import torch


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(self.decay).add_(v, alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def copy_to(self, model):
        model.load_state_dict(self.ema)


def warmup_cosine_lr(optimizer, step, base_lr, warmup, total, min_lr=1e-6):
    if step < warmup:
        lr = base_lr * (step + 1) / warmup
    else:
        t = (step - warmup) / max(1, total - warmup)
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def cutmix(x, y, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    idx = torch.randperm(x.size(0), device=x.device)
    h, w = x.shape[2:]
    rh, rw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y1, y2 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
    x1, x2 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
    x[:, :, y1:y2, x1:x2] = x[idx, :, y1:y2, x1:x2]  # ok: MLS309
    lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    return x, y, y[idx], lam


def train_epoch(model, loader, optimizer, scaler, ema, accum=4, step=0, **sched):
    model.train()
    for i, (x, y) in enumerate(loader):
        x, ya, yb, lam = cutmix(x.cuda(), y.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
            loss = lam * torch.nn.functional.cross_entropy(out, ya) + (1 - lam) * torch.nn.functional.cross_entropy(out, yb)
        scaler.scale(loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % accum == 0:
            warmup_cosine_lr(optimizer, step, **sched)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
            step += 1
    return step
