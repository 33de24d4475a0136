# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Single-node AMP training for SAR flood segmentation with warmup, accumulation and preemption-safe checkpoints."""
import math
import os
import signal
import sys

import torch
import torch.nn.functional as F

CKPT = "ckpt/flood_last.pt"


def set_seed(seed):
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(model, loader, seed=3, epochs=30, base_lr=1e-3, accum=4, warmup=300):
    set_seed(seed)
    model = model.cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    step, start_epoch = 0, 0
    if os.path.exists(CKPT):
        state = torch.load(CKPT, map_location="cuda", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, start_epoch = state["step"], state["epoch"]
    epoch = start_epoch

    def save(epoch):
        os.makedirs(os.path.dirname(CKPT), exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch}, CKPT)

    def on_sigterm(signum, frame):
        save(epoch)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    total = epochs * len(loader) // accum
    for epoch in range(start_epoch, epochs):
        for i, (sar, water) in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(sar.cuda(non_blocking=True))
                loss = F.binary_cross_entropy_with_logits(logits, water.cuda(non_blocking=True))
            scaler.scale(loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum == 0:
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, base_lr, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
        save(epoch + 1)
