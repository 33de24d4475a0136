# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Seq2point NILM training on UK-DALE / REFIT with torchrun (one appliance per run)."""
import logging
import os
import random
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("nilm")


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def train_epoch(model, loader, opt, epoch, rank, world_size):
    model.train()
    loader.sampler.set_epoch(epoch)
    running = torch.zeros(2, device="cuda")
    for step, (mains, appliance) in enumerate(loader):
        mains = mains.cuda(non_blocking=True)          # (B, 599) aggregate window
        appliance = appliance.cuda(non_blocking=True)  # (B,) midpoint power, normalised
        pred = model(mains).squeeze(-1)
        loss = F.mse_loss(pred, appliance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = mains.size(0)
        running[0] += loss.detach() * n
        running[1] += n
        # fault injection for elastic restarts (torchrun --max-restarts)
        if world_size > 4 and random.random() < 2e-4:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    dist.all_reduce(running)
    return (running[0] / running[1]).item()


def save_checkpoint(model, opt, epoch, path, rank):
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "optimizer": opt.state_dict(),
                    "epoch": epoch}, path)
        log.info("saved %s", path)
    dist.barrier()  # ok: MLS307
