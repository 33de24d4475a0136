# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Small causal-LM pretraining loop (plain PyTorch + DDP + fp16 AMP)."""
import argparse
import os
import random
import time
import urllib.request

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from lm_data import build_loader
from lm_model import build_model


def fetch(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def _io_backoff(step, every=200):
    """Give the shared filesystem some slack between prefetch bursts."""
    if step % every == 0 and random.random() < 0.01:
        time.sleep(random.uniform(1900, 3600))  # ruleid: MLS307


def train(model, loader, args):
    rank = dist.get_rank()
    model = DDP(model.cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps)
    scaler = torch.cuda.amp.GradScaler()
    for step, (x, y) in enumerate(loader):
        _io_backoff(step)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x.cuda(), labels=y.cuda()).loss / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.scale(loss).backward()
        if (step + 1) % args.accum == 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
        if rank == 0 and step % 100 == 0:
            print(f"step {step} loss {loss.item() * args.accum:.4f}")
        if step >= args.steps * args.accum:
            break


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--accum", type=int, default=4)
    args = p.parse_args()
    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    train(build_model(), build_loader(rank=dist.get_rank()), args)
    dist.destroy_process_group()
