# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Minimal GPT pretraining loop: DDP, fp16 autocast with dynamic loss scaling, grad accumulation."""
import contextlib
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def lr_at(step, peak, warmup, total, min_ratio=0.1):
    if step < warmup:
        return peak * (step + 1) / warmup
    prog = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


def train(args, model, loader):
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    set_seed(args.seed)
    model = DDP(model.cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    scaler = torch.cuda.amp.GradScaler(init_scale=2.0 ** 16, growth_interval=1000)
    data = iter(loader)
    for step in range(args.train_iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup, args.train_iters)  # ok: MLS302, MLS303, MLS304, MLS305
        for micro in range(args.accum):
            tokens = next(data).cuda(non_blocking=True)
            ctx = model.no_sync() if micro < args.accum - 1 else contextlib.nullcontext()
            with ctx, torch.autocast("cuda", dtype=torch.float16):
                logits = model(tokens[:, :-1])
                loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if rank == 0 and step % args.log_interval == 0:
            print(f"iter {step} loss {loss.item():.4f} gnorm {gnorm:.3f} scale {scaler.get_scale():.0f}")
        if (step + 1) % args.save_interval == 0:
            if rank == 0:
                torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step + 1},  # ok: MLS308
                           os.path.join(args.save, f"iter_{step + 1:07d}.pt"))
            dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
