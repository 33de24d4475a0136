# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Two-tower retrieval model trained with in-batch softmax; sparse item table uses a row-wise Adagrad."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class RowWiseAdagrad(torch.optim.Optimizer):
    def __init__(self, params, lr=0.05, eps=1e-10):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {"sum": torch.zeros(p.shape[0], device=p.device)})
                state["sum"].add_(p.grad.pow(2).mean(1))
                std = state["sum"].sqrt().add_(group["eps"]).unsqueeze(1)
                p.add_(p.grad / std, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


class Tower(nn.Module):
    def __init__(self, n, dim=64):
        super().__init__()
        self.emb = nn.Embedding(n, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, dim))

    def forward(self, ids):
        return F.normalize(self.mlp(self.emb(ids)), dim=-1)


def train(loader, evaluate, n_users, n_items, args):
    set_seed(args.seed)
    user, item = Tower(n_users).cuda(), Tower(n_items).cuda()
    dense = [p for m in (user.mlp, item.mlp, user.emb) for p in m.parameters()]
    opt_dense, opt_sparse = torch.optim.AdamW(dense, lr=args.lr), RowWiseAdagrad(item.emb.parameters())
    best, bad, step = 0.0, 0, 0
    for epoch in range(args.epochs):
        for users, items in loader:
            lr = args.lr * min(1.0, (step + 1) / args.warmup)
            for g in opt_dense.param_groups:
                g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            logits = user(users.cuda()) @ item(items.cuda()).T / args.temperature
            loss = F.cross_entropy(logits, torch.arange(len(users), device=logits.device))
            opt_dense.zero_grad(); opt_sparse.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dense, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt_dense.step(); opt_sparse.step()
            step += 1
        recall = evaluate(user, item, k=50)
        if recall > best:
            best, bad = recall, 0
            torch.save({"user": user.state_dict(), "item": item.state_dict()}, args.out)
        else:
            bad += 1
        if bad >= args.patience:
            break  # ok: MLS307
    return torch.load(args.out, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
