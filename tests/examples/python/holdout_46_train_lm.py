# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Small GPT language-model pretraining loop with AMP, warmup, EMA and grad accumulation."""
import argparse
import copy
import math

import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig
from data import TokenStream


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def ema_update(ema_model, model, decay=0.999):
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--steps", type=int, default=50000)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--init_from", default=None)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    model = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768)).cuda()
    if args.init_from:
        model.load_state_dict(torch.load(args.init_from, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    scaler = torch.cuda.amp.GradScaler()
    stream = TokenStream("train.bin", block_size=1024, batch_size=12)

    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, 2000, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
        for _ in range(args.accum):
            x, y = stream.next_batch()
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, model)
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e}")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict()}, "ckpt.pt")


if __name__ == "__main__":
    main()
