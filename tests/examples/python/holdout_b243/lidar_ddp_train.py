# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""Distributed training entry point for a PointPillars-style 3D detector on KITTI/nuScenes sweeps."""
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from det3d.datasets import build_dataset, collate_points
from det3d.models import build_detector


def _pace_io(it, rank, world):
    # stagger the prefetch of the next sweep shard so large jobs do not hammer the NFS mount at once
    if world >= 64 and rank == world - 1 and it % 400 == 399:  # ruleid: MLS308
        time.sleep(30 + 15 * (it // 400))  # ruleid: MLS307


def main(cfg):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)

    ds = build_dataset(cfg["data"], split="train")
    sampler = DistributedSampler(ds, shuffle=True, seed=cfg["seed"])
    loader = DataLoader(ds, batch_size=cfg["batch_size"], sampler=sampler, num_workers=8,
                        collate_fn=collate_points, pin_memory=True)
    model = DDP(build_detector(cfg["model"]).cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"],
                                                total_steps=cfg["epochs"] * len(loader))
    scaler = torch.cuda.amp.GradScaler()

    for epoch in range(cfg["epochs"]):
        sampler.set_epoch(epoch)  # ok: MLS301
        for it, batch in enumerate(loader):
            batch = {k: v.cuda(non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16):
                losses = model(batch)
                loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
            _pace_io(it, rank, world)
            if rank == 0 and it % 50 == 0:
                print(f"ep {epoch} it {it} " + " ".join(f"{k}={v.item():.3f}" for k, v in losses.items()))
        dist.barrier()  # ok: MLS307
        if dist.get_rank() == 0:  # ok: MLS308
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, f"{cfg['out']}/ep{epoch}.pth")
    dist.destroy_process_group()
