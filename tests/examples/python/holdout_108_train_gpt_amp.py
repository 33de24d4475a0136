# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Minimal GPT pretraining loop: fp16 autocast, gradient accumulation, clipping, warmup-cosine LR."""
import argparse
import math
import random
import numpy as np
import torch
from torch.utils.data import DataLoader
from data import TokenDataset
from model import GPT


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * t))

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    for name, default in (("steps", 20000), ("bs", 16), ("accum", 8), ("warmup", 500), ("seed", 1337)):
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("lr", 6e-4), ("min_lr", 6e-5), ("clip", 1.0)):
        p.add_argument(f"--{name}", type=float, default=default)
    args = p.parse_args()
    set_seed(args.seed)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(TokenDataset(args.data, 1024), batch_size=args.bs, shuffle=True,
                        num_workers=4, worker_init_fn=seed_worker, generator=g, drop_last=True)
    model = GPT(n_layer=12, n_head=12, d_model=768).cuda()
    opt = torch.optim.AdamW([{"params": [q for q in model.parameters() if q.ndim >= 2], "weight_decay": 0.1},
                             {"params": [q for q in model.parameters() if q.ndim < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    scaler = torch.cuda.amp.GradScaler()
    it = iter(loader)
    for step in range(args.steps):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, args)  # ok: MLS302, MLS303, MLS304, MLS305
        for _ in range(args.accum):
            x, y = next(it, (None, None))
            if x is None:
                it = iter(loader)
                x, y = next(it)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(x.cuda(non_blocking=True), y.cuda(non_blocking=True)) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            print(f"step {step} loss {loss.item() * args.accum:.4f} gnorm {gnorm:.2f}")


if __name__ == "__main__":
    main()
