# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""ImageNet ResNet-50 training with DDP, AMP and gradient accumulation."""
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

from ema import warmup_cosine
from shard_stream import set_seed

ACCUM = 4


def main(loader, epochs=90, base_lr=0.8, seed=42):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local)
    set_seed(seed)  # ok: MLS301
    model = DDP(torchvision.models.resnet50().cuda(local), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    writer = SummaryWriter("runs/r50") if rank == 0 else None
    state = {"epoch": 0}

    def on_sigterm(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), **state}, "preempt.pt")
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    total = epochs * len(loader) // ACCUM
    step = 0
    for epoch in range(epochs):
        state["epoch"] = epoch
        loader.sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            x, y = x.cuda(local, non_blocking=True), y.cuda(local, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y) / ACCUM  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % ACCUM:
                continue
            warmup_cosine(opt, step, base_lr, warmup=5 * len(loader) // ACCUM, total=total)
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()  # ok: MLS302, MLS303, MLS304, MLS305
            opt.zero_grad(set_to_none=True)
            step += 1
            if writer is not None and step % 100 == 0:
                writer.add_scalar("train/loss", loss.item() * ACCUM, step)  # ok: MLS306
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), f"r50_e{epoch:03d}.pt")  # ok: MLS307
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
