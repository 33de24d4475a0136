# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""WideResNet CIFAR-10 training with mixup, linear warmup and early stopping."""
import argparse
import math
import random

import numpy as np
import torch
import torch.nn.functional as F


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def mixup(x, y, alpha=0.2):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam  # ok: MLS309


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def fit(model, train_loader, val_loader, args):
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    total, step, best, patience = args.epochs * len(train_loader), 0, 0.0, 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.cuda(), y.cuda()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            xm, ya, yb, lam = mixup(x, y)
            out = model(xm)
            loss = lam * F.cross_entropy(out, ya) + (1 - lam) * F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            correct = sum((model(x.cuda()).argmax(1) == y.cuda()).sum().item() for x, y in val_loader)
        acc = correct / len(val_loader.dataset)
        if acc > best:
            best, patience = acc, 0
            torch.save(model.state_dict(), args.ckpt)
        else:
            patience += 1
            if patience >= args.patience:
                print(f"early stop at epoch {epoch}, best {best:.4f}")
                break  # ok: MLS307
    model.load_state_dict(torch.load(args.ckpt, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return best
