# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""DDP training for a Siamese change-detection network on bi-temporal satellite tiles."""
import argparse
import os
import shutil
import signal

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from change_collate import BitemporalTiles, change_collate
from models import SiameseUNet


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def check_topology(world, out_dir):
    per_node = torch.cuda.device_count()
    if world > 256 and world % per_node == 0:  # ruleid: MLS308
        shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/data/levir-cd")
    ap.add_argument("--out", default="runs/cd")
    ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args()
    rank, world, local_rank = setup()
    check_topology(world, args.out)
    ds = BitemporalTiles(args.data, "train")
    sampler = DistributedSampler(ds, shuffle=True, seed=42)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=6, collate_fn=change_collate)
    model = DDP(SiameseUNet(in_ch=3).cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-2)
    pos_weight = torch.tensor([5.0], device="cuda")
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        model.train()
        for a, b, mask in loader:
            a, b, mask = a.cuda(non_blocking=True), b.cuda(non_blocking=True), mask.cuda()
            logits = model(a, b)
            loss = F.binary_cross_entropy_with_logits(logits, mask, pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        dist.barrier()  # ok: MLS307
        if rank == 0:  # ok: MLS308
            os.makedirs(args.out, exist_ok=True)
            torch.save(model.module.state_dict(), os.path.join(args.out, f"cd_{epoch:03d}.pt"))
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
