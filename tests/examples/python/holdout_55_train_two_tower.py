# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Train a two-tower (user/item) embedding model with in-batch negatives and AMP."""
import math
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def worker_init_fn(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301


class Tower(nn.Module):
    def __init__(self, n_ids, dim=64, out=32):
        super().__init__()
        self.emb = nn.EmbeddingBag(n_ids, dim, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, out))

    def forward(self, ids, offsets):
        return F.normalize(self.mlp(self.emb(ids, offsets)), dim=-1)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(users, items, loader, args, device="cuda"):
    set_seed(args.seed)  # ok: MLS301
    params = list(users.parameters()) + list(items.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    scaler = torch.cuda.amp.GradScaler()
    total = args.epochs * len(loader) // args.accum
    step = 0
    for epoch in range(args.epochs):
        for i, (u_ids, u_off, i_ids, i_off) in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                u = users(u_ids.to(device), u_off.to(device))
                v = items(i_ids.to(device), i_off.to(device))
                logits = u @ v.T / args.temperature
                loss = F.cross_entropy(logits, torch.arange(len(u), device=device))
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
    return users, items


def load_pretrained_item_tower(path, items):
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    items.load_state_dict(sd)
    return items
