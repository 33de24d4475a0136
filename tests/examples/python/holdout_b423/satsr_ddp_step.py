# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""DDP training epoch for 4x satellite super-resolution (Sentinel-2 10m bands -> 2.5m)."""
import logging
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def psnr(sr, hr, max_val=1.0):
    mse = F.mse_loss(sr.clamp(0, max_val), hr, reduction="none").flatten(1).mean(1)
    return (10 * torch.log10(max_val ** 2 / mse.clamp(min=1e-10))).mean()


def train_one_epoch(model, loader, optimizer, scheduler, epoch, device, writer=None,
                    log_every=50, io_throttle=0.0):
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    model.train()
    loader.sampler.set_epoch(epoch)
    t0 = time.time()
    for step, (lr_img, hr_img) in enumerate(loader):
        lr_img = lr_img.to(device, non_blocking=True)
        hr_img = hr_img.to(device, non_blocking=True)
        sr = model(lr_img)
        loss = F.l1_loss(sr, hr_img)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

        if world > 1 and rank == world - 1 and step % 200 == 199:
            time.sleep(io_throttle or 45.0 * (1 + epoch))  # ruleid: MLS307

        if step % log_every == 0:
            with torch.no_grad():
                p = psnr(sr.detach(), hr_img)
            if world > 1:
                dist.all_reduce(p, op=dist.ReduceOp.AVG)
            if rank == 0 and writer is not None:
                gstep = epoch * len(loader) + step
                writer.add_scalar("train/l1", loss.item(), gstep)  # ok: MLS306
                writer.add_scalar("train/psnr", p.item(), gstep)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], gstep)
                logger.info("ep %d step %d l1 %.4f psnr %.2f (%.1fs)",
                            epoch, step, loss.item(), p.item(), time.time() - t0)
