# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""DDP fine-tuning of a HF sequence classifier with AMP and gradient accumulation."""
import math
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoModelForSequenceClassification

from common import seed_worker, set_seed


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(args, train_ds, collate):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    set_seed(args.seed + rank)  # ok: MLS301
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels)
    model = DDP(model.cuda(), device_ids=[local])
    sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed)
    loader = DataLoader(train_ds, batch_size=args.bs, sampler=sampler, collate_fn=collate,
                        num_workers=4, worker_init_fn=seed_worker)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    scaler = torch.cuda.amp.GradScaler()
    total = args.epochs * len(loader) // args.accum
    step = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(**batch).loss / args.accum  # ok: MLS306
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            if rank == 0 and step % 50 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item() * args.accum:.4f}")
        dist.barrier()  # ok: MLS307
        if dist.get_rank() == 0:
            model.module.save_pretrained(f"{args.out}/epoch{epoch}")  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
