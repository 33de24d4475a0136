# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Minimal GPT pretraining loop used by the small-scale ablation configs (DDP, bf16/fp16)."""
import argparse
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pretrain.models import build_gpt
from pretrain.data import build_train_loader


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def lr_at(step: int, max_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return max_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return max_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def main(args):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(args.seed)
    model = DDP(build_gpt(args.model_cfg).cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)
    loader = build_train_loader(args.data, args.micro_bs, args.seed, rank, dist.get_world_size())
    it = iter(loader)
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
        for micro in range(args.accum):
            x, y = (t.cuda(non_blocking=True) for t in next(it))
            with model.no_sync() if micro < args.accum - 1 else torch.enable_grad():
                with torch.autocast("cuda", dtype=torch.float16 if args.fp16 else torch.bfloat16):
                    loss = model(x, labels=y).loss / args.accum  # ok: MLS306
                scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if rank == 0 and step % args.log_every == 0:  # ok: MLS307
            print(f"step {step} loss {loss.item() * args.accum:.4f} gnorm {gnorm:.3f}", flush=True)
        if step > 0 and step % args.save_every == 0:
            dist.barrier()  # ok: MLS307
            if dist.get_rank() == 0:  # ok: MLS308
                torch.save({"model": model.module.state_dict(), "step": step}, f"{args.out}/step_{step}.pt")
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for k, v in dict(seed=1234, lr=3e-4, warmup=2000, steps=100000, accum=8, micro_bs=8, clip=1.0,
                     log_every=10, save_every=1000).items():
        p.add_argument(f"--{k}", type=type(v), default=v)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--model_cfg"); p.add_argument("--data"); p.add_argument("--out")
    main(p.parse_args())
