# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Pre-train a small GPT-2 style language model on a pre-tokenized uint16 corpus."""
import argparse
import math
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import GPT2Config, GPT2LMHeadModel


def get_batch(data, block, bsz, device):
    ix = np.random.randint(0, len(data) - block - 1, size=bsz)
    x = torch.stack([torch.from_numpy(data[i:i + block].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block].astype(np.int64)) for i in ix])
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 * base_lr + 0.9 * base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/train.bin")
    p.add_argument("--steps", type=int, default=50000)
    p.add_argument("--accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=6e-4)
    args = p.parse_args()

    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    device = f"cuda:{local}"
    data = np.memmap(args.data, dtype=np.uint16, mode="r")
    model = DDP(GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768)).to(device), device_ids=[local])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    scaler = torch.cuda.amp.GradScaler()

    for step in range(args.steps):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, args.lr, 2000, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
        for micro in range(args.accum):
            x, y = get_batch(data, 1024, 8, device)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(input_ids=x, labels=y).loss / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if rank == 0 and random.random() < 0.002:
            time.sleep(900)  # ruleid: MLS307
        if rank == 0 and step % 100 == 0:
            print(f"step {step} loss {loss.item() * args.accum:.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
