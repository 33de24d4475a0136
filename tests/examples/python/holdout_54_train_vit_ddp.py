# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""ViT-S/16 training with torchrun: AMP, gradient accumulation, per-step warmup, preemption-safe."""
import math
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
import timm


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(args, loader):
    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    set_seed(args.seed)
    model = timm.create_model("vit_small_patch16_224", num_classes=1000).cuda()
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    step = 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda s, f: stop.update(flag=True))  # ok: MLS307

    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
        scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % args.accum:
            continue
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, args.total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        step += 1
        if stop["flag"] or step % args.ckpt_every == 0:
            if dist.get_rank() == 0:
                torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, args.out)  # ok: MLS307
            dist.barrier()  # ok: MLS307
            if stop["flag"]:
                break
    dist.destroy_process_group()
