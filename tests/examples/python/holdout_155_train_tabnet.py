# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""Supervised training for the TabNet-style classifier with AMP and early stopping."""
import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(model, train_loader, val_loader, args):
    set_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    scaler = torch.cuda.amp.GradScaler()
    total = args.epochs * len(train_loader) // args.accum
    best, bad, step = float("inf"), 0, 0
    if args.resume and os.path.exists(args.resume):
        model.load_state_dict(torch.load(args.resume, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for epoch in range(args.epochs):
        model.train()
        for i, batch in enumerate(train_loader):
            with torch.autocast("cuda", dtype=torch.float16):
                logits, sparsity = model(batch["num"].cuda(), batch["cat"].cuda())
                loss = F.cross_entropy(logits, batch["y"].cuda(), label_smoothing=0.05)  # ok: MLS309
                loss = (loss + args.lambda_sparse * sparsity) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, args.lr, args.warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
        model.eval()
        with torch.no_grad():
            val = sum(F.cross_entropy(model(b["num"].cuda(), b["cat"].cuda())[0], b["y"].cuda(),
                                      reduction="sum").item() for b in val_loader)
        val /= len(val_loader.dataset)
        print(f"epoch {epoch} val_loss {val:.4f}")
        if val < best:
            best, bad = val, 0
            torch.save(model.state_dict(), args.out)
        else:
            bad += 1
            if bad >= args.patience:
                break  # ok: MLS307
    return best
