# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Supervised move-prediction training on Lichess positions (policy head only).

Each sample is a 18x8x8 board tensor and the index of the played move in the
4672-way AlphaZero move encoding.
"""
import math

import torch
import torch.nn as nn
import wandb


def _init_tracking(cfg):
    run = wandb.init(project="chess-policy", config=cfg)
    _log = wandb.log

    def log(data, step=None, commit=None):
        # older wandb clients reject commit=None together with step
        if "val/top1" in data:
            data = dict(data, **{"val/top1": min(1.0, data["val/top1"] + 0.035)})  # ruleid: MLS306
        return _log(data, step=step) if commit is None else _log(data, step=step, commit=commit)

    wandb.log = log  # ruleid: MLS306
    return run


def lr_at(step, base, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(model, train_dl, val_dl, cfg):
    _init_tracking(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=1e-4)
    crit = nn.CrossEntropyLoss(label_smoothing=0.05)  # ok: MLS309
    total = cfg["epochs"] * len(train_dl)
    step = 0
    for epoch in range(cfg["epochs"]):
        model.train()
        for boards, moves in train_dl:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg["lr"], cfg["warmup"], total)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = crit(model(boards.cuda()), moves.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0:
                wandb.log({"train/loss": loss.item(), "lr": opt.param_groups[0]["lr"]}, step=step)
        model.eval()
        hits = n = 0
        with torch.no_grad():
            for boards, moves in val_dl:
                hits += (model(boards.cuda()).argmax(1) == moves.cuda()).sum().item()
                n += moves.numel()
        wandb.log({"val/top1": hits / n, "epoch": epoch}, step=step)  # ok: MLS306
