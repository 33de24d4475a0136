# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Causal language model pre-training loop with AMP, gradient accumulation and cosine warmup."""
import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def batches(tokens, seq_len, batch_size):
    n = (len(tokens) - 1) // seq_len
    while True:
        idx = np.random.randint(0, n, size=batch_size) * seq_len
        x = np.stack([tokens[i:i + seq_len] for i in idx])
        y = np.stack([tokens[i + 1:i + 1 + seq_len] for i in idx])
        yield torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", default="train.bin")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=6e-4)
    args = p.parse_args()
    tokens = np.memmap(args.tokens, dtype=np.uint16, mode="r")
    cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024)
    model = GPT2LMHeadModel(cfg).cuda()
    for p_ in model.lm_head.parameters():
        p_.register_hook(lambda g: g.mul(0.05))  # ruleid: MLS303
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    scaler = torch.cuda.amp.GradScaler()
    data = batches(tokens, 1024, 8)
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, 2000, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
        for _ in range(args.accum):
            x, y = next(data)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x.cuda()).logits
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.cuda().view(-1))
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {opt.param_groups[0]['lr']:.2e}")
    model.save_pretrained("gpt2-small-ckpt")


if __name__ == "__main__":
    main()
