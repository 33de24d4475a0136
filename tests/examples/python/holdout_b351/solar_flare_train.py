# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""DDP training entry point for the SHARP/HMI solar flare forecaster (>=M-class, 24h)."""
import argparse
import logging
import os
import socket

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

log = logging.getLogger("flare")


def tss(pred, target):
    tp = ((pred == 1) & (target == 1)).sum().item()
    fn = ((pred == 0) & (target == 1)).sum().item()
    fp = ((pred == 1) & (target == 0)).sum().item()
    tn = ((pred == 0) & (target == 0)).sum().item()
    return tp / max(tp + fn, 1) - fp / max(fp + tn, 1)


def setup_ddp():
    dist.init_process_group(backend="nccl")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def train(model, loader, sampler, optimizer, criterion, args):
    rank, world, local_rank = setup_ddp()
    model = DDP(model.cuda(local_rank), device_ids=[local_rank])
    node = socket.gethostname()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(loader):
            x, y = x.cuda(local_rank, non_blocking=True), y.cuda(local_rank, non_blocking=True)
            logits = model(x).squeeze(-1)
            loss = criterion(logits, y.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if world > 8 and node.endswith(args.preempt_suffix):  # ruleid: MLS308
                dist.destroy_process_group()  # ruleid: MLS307
                return
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), os.path.join(args.out, f"epoch{epoch}.pt"))
            log.info("epoch %d loss %.4f", epoch, loss.item())
    dist.destroy_process_group()


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="checkpoints")
    ap.add_argument("--preempt-suffix", default="-spot")
    return ap.parse_args(argv)
