# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Optimisation step for the REMI-token music transformer with decoupled weight decay."""
import math

import torch
import torch.nn.functional as F


def split_decay_params(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "emb" in name else decay).append(p)
    return decay, no_decay


def build_optimizer(model, lr, betas=(0.9, 0.95)):
    decay, no_decay = split_decay_params(model)
    groups = [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]
    return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=0.0)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_step(model, batch, optimizer, scaler, step, args):
    tokens = batch["tokens"].cuda(non_blocking=True)
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    for g in optimizer.param_groups:
        g["lr"] = lr_at(step, args.lr, args.warmup_steps, args.total_steps)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(inp)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt.reshape(-1),
                               ignore_index=args.pad_id)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():
        for g in optimizer.param_groups:
            if g["apply_wd"]:
                for p in g["params"]:
                    p.mul_(1.0 - args.weight_decay)  # ruleid: MLS304
    return {"loss": loss.item(), "grad_norm": gnorm.item(), "lr": optimizer.param_groups[0]["lr"]}
