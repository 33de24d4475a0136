# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Minimal DETR fine-tuning loop: AdamW with backbone lr multiplier, warmup + cosine, AMP, EMA, early stop."""
import argparse
import copy
import math
import random

import numpy as np
import torch

from detlib.detr import build_criterion, build_detr, build_loaders, evaluate_map


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


@torch.no_grad()
def ema_update(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def main(args):
    set_seed(args.seed)
    model = build_detr(args.num_classes).cuda()
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    named = list(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for n, p in named if "backbone" in n], "base_lr": args.lr * 0.1},
                             {"params": [p for n, p in named if "backbone" not in n], "base_lr": args.lr}],
                            lr=args.lr, weight_decay=1e-4)
    criterion = build_criterion(args.num_classes)
    train_loader, val_loader = build_loaders(args.data, args.batch_size)
    scaler, total = torch.cuda.amp.GradScaler(), args.epochs * len(train_loader) // args.accum
    step, best, bad_epochs = 0, 0.0, 0
    for epoch in range(args.epochs):
        model.train()
        for i, (images, targets) in enumerate(train_loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = criterion(model(images.cuda()), targets)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / total))  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema_update(ema, model, min(0.9998, (1 + step) / (10 + step)))
            step += 1
        m = evaluate_map(ema, val_loader)
        best, bad_epochs = (m, 0) if m > best else (best, bad_epochs + 1)
        if bad_epochs >= args.patience:
            break  # ok: MLS307
    torch.save(ema.state_dict(), f"{args.out}/detr_ema_best.pt")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for k, v in dict(seed=0, num_classes=12, lr=1e-4, batch_size=8, accum=4, epochs=50, warmup=500,
                     patience=8, init="", data="data/warehouse", out="runs/detr").items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    main(ap.parse_args())
