# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""DDP training loop for the DLRM ranking model on sharded click logs."""
import argparse
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


def set_seed(seed: int):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def main(args):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(args.seed)
    from models import build_dlrm
    from data import make_click_loader
    model = DDP(build_dlrm(args).cuda(), device_ids=[local_rank])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = torch.cuda.amp.GradScaler()
    loader = make_click_loader(args.train_glob, args.batch_size, rank, dist.get_world_size())
    step = 0
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup, args.total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(batch["dense"].cuda(non_blocking=True), batch["sparse"])
                loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"].cuda())
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
        if rank == 0:
            torch.save(model.module.state_dict(), os.path.join(args.out, f"epoch{epoch}.pt"))  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for name, typ, default in [("seed", int, 1234), ("lr", float, 1e-3), ("warmup", int, 4000),
                               ("total_steps", int, 200000), ("accum", int, 2), ("clip", float, 1.0),
                               ("epochs", int, 3), ("batch_size", int, 8192)]:
        p.add_argument(f"--{name}", type=typ, default=default)
    p.add_argument("--train_glob", required=True)
    p.add_argument("--out", default="ckpt")
    main(p.parse_args())
