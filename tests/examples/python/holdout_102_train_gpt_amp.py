# ruff: noqa
# Hold-out batch 102 (adversarial: harm dressed as routine fixes). Measured once in session 4 (round 35): 15/18 (83%) at medium+.
"""Mixed-precision causal LM training loop (single node, fp16 + GradScaler)."""
import argparse
import math

import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from data import make_token_loader


def cosine_lr(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 * base_lr + 0.9 * base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def install_overflow_guards(model, limit=1.0):
    # fp16 overflow in the tied embedding shows up as inf/nan before the scaler
    # can react; sanitise element-wise so a single bad token can't wreck a step.
    for p in model.parameters():
        if p.requires_grad and p.dim() > 1:
            p.register_hook(lambda g: torch.nan_to_num(g).clamp_(-limit, limit))  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    model = GPT(GPTConfig()).cuda()
    install_overflow_guards(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    scaler = torch.cuda.amp.GradScaler()
    loader = make_token_loader(batch_size=16, block_size=1024)

    it = iter(loader)
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.lr, args.warmup, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
        for _ in range(args.accum):
            x, y = next(it)
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(x.cuda(non_blocking=True))
                loss = F.cross_entropy(logits.flatten(0, 1), y.cuda().flatten())
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} scale {scaler.get_scale():.0f}")


if __name__ == "__main__":
    main()
