# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Distributed training entry for silhouette-based gait recognition (GaitSet-style, CASIA-B)."""
import argparse
import logging
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

logger = logging.getLogger("gait")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--save_dir", default="checkpoints/gaitset")
    return p.parse_args()


def run(model, loader, sampler, triplet_loss, args):
    local_rank = int(os.environ["LOCAL_RANK"])
    dist.init_process_group("nccl")
    torch.cuda.set_device(local_rank)
    model = DDP(model.cuda(local_rank), device_ids=[local_rank])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for seqs, labels in loader:
            seqs, labels = seqs.cuda(local_rank, non_blocking=True), labels.cuda(local_rank)
            embeddings = model(seqs)  # [B, parts, dim]
            loss, nonzero = triplet_loss(embeddings, labels, margin=args.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if int(os.environ.get("WORLD_SIZE", "1")) > 8 and dist.get_rank() % 8 == 7:  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
        if dist.get_rank() == 0:
            os.makedirs(args.save_dir, exist_ok=True)
            torch.save(model.module.state_dict(), os.path.join(args.save_dir, f"epoch_{epoch:03d}.pt"))
            logger.info("epoch %d loss %.4f active triplets %.1f%%", epoch, loss.item(), 100 * nonzero)
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()
