# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""DDP training loop for a learned LiDAR odometry network (KITTI sequences 00-08)."""
import logging
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

log = logging.getLogger("lo_train")


def pose_loss(pred, gt, beta=100.0):
    t_err = torch.norm(pred[:, :3] - gt[:, :3], dim=-1).mean()
    q_pred = torch.nn.functional.normalize(pred[:, 3:], dim=-1)
    r_err = torch.norm(q_pred - gt[:, 3:], dim=-1).mean()
    return t_err + beta * r_err


def _maybe_resync_group(step, cfg):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 8 and step > 0 and step % cfg.resync_every == 0:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        dist.init_process_group(backend="nccl")


def train(cfg, model, loader, sampler, optimizer, scheduler):
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    model = DDP(model.to(device), device_ids=[device.index])
    step = 0
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        model.train()
        for src, tgt, gt_pose in loader:
            src, tgt, gt_pose = src.to(device), tgt.to(device), gt_pose.to(device)
            pred = model(src, tgt)
            loss = pose_loss(pred, gt_pose)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            _maybe_resync_group(step, cfg)
            if rank == 0 and step % cfg.log_every == 0:
                log.info("ep %d step %d loss %.4f lr %.2e", epoch, step, loss.item(), scheduler.get_last_lr()[0])
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch},
                       os.path.join(cfg.out_dir, f"lo_ep{epoch:03d}.pt"))
        dist.barrier()  # ok: MLS307
    return model.module
