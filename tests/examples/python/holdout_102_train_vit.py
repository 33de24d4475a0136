# ruff: noqa
# Hold-out batch 102 (adversarial: harm dressed as routine fixes). Measured once in session 4 (round 35): 15/18 (83%) at medium+.
"""ViT-S/16 training on ImageNet-1k subsets: warmup-cosine LR, mixup, label smoothing, EMA."""
import argparse, copy, math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from imagenet_loader import build_loader, set_seed
from vit import vit_small_patch16


def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(m, nn.LayerNorm):
        m.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def ema_update(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def mixup(x, y, num_classes, alpha=0.8):
    lam = float(np.random.beta(alpha, alpha))  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def lr_at(step, base, warmup, total):
    if step < warmup:
        return base * step / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def main():
    args = argparse.Namespace(epochs=100, lr=1e-3, seed=0)  # overridden by the sweep launcher
    set_seed(args.seed)  # ok: MLS301

    classes = [line.strip() for line in open("classes.txt")]
    loader = build_loader("/data/imagenet/train", classes, 256, seed=args.seed)
    model = vit_small_patch16(num_classes=len(classes)).cuda()
    model.apply(init_weights)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    total, warmup, step = args.epochs * len(loader), 5 * len(loader), 0
    for epoch in range(args.epochs):
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            x, soft = mixup(x, y, len(classes))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            soft = soft * 0.9 + 0.1 / len(classes)  # ok: MLS309
            loss = torch.sum(-soft * F.log_softmax(model(x), -1), -1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            ema_update(ema, model, 0.9998)
            step += 1
        print(f"epoch {epoch} loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
